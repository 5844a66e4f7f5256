"""The memory model (spkrobust.nets.memory) against the layer table by hand and against a measured pass."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spkrobust.nets import memory as mm

REPO = Path(__file__).resolve().parents[3]


def test_inference_peak_is_the_largest_live_set_of_one_op():
    # CIFAR-10: conv 1 holds its 3 x 32 x 32 input and two 64 x 32 x 32 outputs (result, oneDNN's
    # reordered copy); VGG9's conv 2 its 64 x 32 x 32 input and two outputs; SpikingJelly's torch node
    # holds spikes and the membrane sequence beside its input
    W, x = 64 * 32 * 32, 3 * 32 * 32
    v5, v9 = mm.net("vgg5", "cifar10"), mm.net("vgg9", "cifar10")
    assert mm.infer_bytes(v5, "fused") == (x + 2 * W) * 4
    assert mm.infer_bytes(v9, "fused") == mm.infer_bytes(v5, "torch") == 3 * W * 4
    assert mm.infer_bytes(mm.net("vgg5", "fashion_mnist"), "fused") == (28 * 28 + 2 * 64 * 28 * 28) * 4
    assert [k for k, _, _ in v5.ops].count("weight") == 6 and v5.ops[0] == ("weight", x, W)


_CHILD = r"""
import json, sys, torch
torch.set_num_threads(1)
from spkrobust.nets import heap
from spkrobust.nets.inference import bounded_forward
from spkrobust.nets.models import build_model, default_meta
from spkrobust.tools.bench_memory import _rss_bytes, _rss_peak_bytes
snn = build_model(default_meta("snn", "vgg5", 3, 32, 10, [0.5] * 3, [0.25] * 3, T=128, backend="fused")).eval()
x = torch.rand(4, 3, 32, 32)
out = {"tuned_before": heap.tune_allocator()}
with torch.no_grad():
    bounded_forward(snn, x[:1], 1, 16)  # a T cut: releases the heap tuning
    out["tuned_after"] = heap.tune_allocator()
    for k in (32, 64):
        open("/proc/self/clear_refs", "w").write("5")
        base = _rss_bytes()
        bounded_forward(snn, x, 4, k)
        out[k] = _rss_peak_bytes() - base
print(json.dumps(out))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists() or sys.platform != "linux",
                    reason="needs Linux's /proc peak-RSS reset")
def test_a_time_cut_pass_releases_the_heap_and_peaks_at_its_live_set():
    # measured in a fresh process (the heap setting is process-wide): the pass's peak grows by the
    # model's live set per image-step of the piece (4 images x 32 more steps), within 15 %
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["tuned_after"] is False
    slope = (out["64"] - out["32"]) / (4 * 32)
    model = mm.infer_bytes(mm.net("vgg5", "cifar10"), "fused")
    assert abs(slope / model - 1) < 0.15, (slope / 2 ** 20, model / 2 ** 20)

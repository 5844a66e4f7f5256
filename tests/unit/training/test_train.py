"""ANN and spike-based SNN training on real data; resumable training."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ann_cfg
from spkrobust import load_model
from spkrobust.nets.models import build_model



def test_trained_ann_learns(trained_ann_path):
    m = json.loads((trained_ann_path.parent / "metrics.json").read_text())
    assert m["clean_acc"] > 0.65, m["clean_acc"]
    assert m["kind"] == "ann" and m["seed"] == 0 and "torch" in m["versions"]
    assert load_model(trained_ann_path).meta["clean_acc"] == m["clean_acc"]


def test_spike_training_improves_a_short_converted_snn(small_data, trained_ann_path, tmp_path):
    from spkrobust.training.convert import run_convert
    from spkrobust.training.train import accuracy, train_snn

    conv = {"model": {"name": "c", "kind": "convert", "T": 4, "calib_T": 4, "neuron": "if", "encoder": "direct"},
            "replica": 1, "seed": 0, "device": "cpu"}
    run_convert(small_data, conv, str(trained_ann_path), str(tmp_path / "c.pt"))
    cfg = {"model": {"name": "s", "kind": "snn", "from": "c", "T": 4, "neuron": "lif", "leak": 0.9,
                     "encoder": "direct", "train": {"epochs": 1, "lr": 3e-4, "batch_size": 32}},
           "replica": 1, "seed": 0, "device": "cpu"}
    before = accuracy(build_snn_from(tmp_path / "c.pt", cfg), small_data.test_x, small_data.test_y)
    m = train_snn(small_data, cfg, tmp_path / "s.pt", tmp_path / "s.json", init=tmp_path / "c.pt")
    assert m["clean_acc"] > before, (before, m["clean_acc"])
    assert m["meta"]["neuron"] == "lif" and m["meta"]["leak"] == 0.9 and m["kind"] == "snn"


def build_snn_from(path, cfg):
    from spkrobust.training.common import snn_meta_from

    parent = load_model(path)
    snn = build_model(snn_meta_from(cfg["model"], parent.meta))
    snn.load_state_dict(parent.state_dict(), strict=False)
    return snn


@pytest.mark.slow
def test_killed_training_resumes_from_last_epoch_and_matches_uninterrupted(small_data_path, tmp_path):
    """SIGKILL a real training process after its first epoch checkpoint; the rerun resumes and ends
    with exactly the weights of an uninterrupted run."""
    cfg = json.dumps(ann_cfg(epochs=3))
    env = {**os.environ, "OMP_NUM_THREADS": "2"}

    def cmd(d):
        return [sys.executable, "-m", "spkrobust", "train-ann", "--data", str(small_data_path), "--cfg", cfg,
                "--out", str(d / "model.pt"), "--metrics", str(d / "metrics.json")]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "ckpt" / "last.pt"
    t0 = time.time()
    while not ckpt.exists() and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.pt").exists()
    assert torch.load(ckpt, weights_only=True)["epoch"] == 0
    out = subprocess.run(cmd(killed), env=env, capture_output=True, text=True, check=True)
    assert "resuming after epoch 1" in out.stdout
    full = tmp_path / "full"
    subprocess.run(cmd(full), env=env, capture_output=True, text=True, check=True)
    a = torch.load(killed / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(full / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


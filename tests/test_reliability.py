"""Interruption and determinism with real processes: a Snakemake run of the tiny preset is killed
(SIGKILL, whole process group) while it crafts/evaluates; what it leaves behind is never mistaken
for complete, the rerun finishes, and its summary.csv is identical to an uninterrupted run's."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spkrobust.io import read_json, safe_load
from helpers.wfutil import TINY, copy_workflow, env, snakemake

LOCAL = ("--workflow-profile", "workflow/profiles/local")


def _wait_for(pred, proc, timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_killed_pipeline_resumes_and_reproduces_the_summary(tiny_run, tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", *LOCAL, "--configfile", TINY, "--cores", "2"],
                            cwd=wd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    adv = wd / "results/fashion_mnist/adv"
    try:
        started = _wait_for(lambda: adv.exists() and any(adv.rglob("*.pt")), proc, 900)
        assert started, "the run ended or timed out before crafting began"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (wd / "results/report/summary.csv").exists()
    # everything that exists under a final name is complete and valid: outputs are written atomically
    for f in (wd / "results").rglob("*"):
        if f.name.startswith("."):
            continue  # temporary files of interrupted writes: never an output name
        if f.suffix == ".pt":
            safe_load(f)
        elif f.suffix == ".json":
            read_json(f)
    # a SIGKILLed Snakemake leaves its lock: the user unlocks (as Snakemake's message says), then reruns;
    # the rerun completes what was left and reproduces the uninterrupted run exactly
    snakemake(wd, "--configfile", TINY, "--unlock")
    p = snakemake(wd, *LOCAL, "--configfile", TINY, "--cores", "2", timeout=1200)
    assert "rule prepare:" not in p.stdout + p.stderr, "finished work was redone after the interruption"
    a = (wd / "results/report/summary.csv").read_text()
    b = (tiny_run / "results/report/summary.csv").read_text()
    assert a == b, "same config and seed must give an identical summary.csv"


def test_killed_craft_leaves_no_output(tmp_path, small_data_path, trained_ann_path):
    """SIGKILL a crafting process mid-run: its output name never appears (atomic write)."""
    import json

    out = tmp_path / "adv.pt"
    cfg = json.dumps({"seed": 0, "device": "cpu", "eval": {"repeats": 1, "batch_size": 50}, "source": "ann",
                      "replica": 1, "attack": "pgd", "dataset": "fashion_mnist"})
    cmd = [sys.executable, "-m", "spkrobust", "craft", "--data", str(small_data_path), "--model",
           str(trained_ann_path), "--attack-cfg", json.dumps({"type": "pgd", "steps": 400, "alpha": "1/255"}),
           "--eps", "8/255", "--cfg", cfg, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(8)
    assert proc.poll() is None, "crafting finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert not [p for p in Path(tmp_path).iterdir() if not p.name.startswith(".")]

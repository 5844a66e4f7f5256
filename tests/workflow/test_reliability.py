"""Interruption and determinism with real processes.

A Snakemake run of the tiny preset, started with the README's command, is killed (SIGKILL to its
whole process group, as a dropped SSH session or an OOM kill does) while a training job is finishing;
what it leaves behind is never mistaken for complete; the README's resume commands, run verbatim,
finish the run, and its summary.csv and models.csv equal an uninterrupted run's.  Also: the plain
command on a machine without CIFAR shows `spkrobust prepare`'s one-line error on the console."""
from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spkrobust.io import read_json, safe_load
from helpers.science import check_science
from helpers.wfutil import RESUME_HEADING, TINY, copy_workflow, env, readme_commands, snakemake, wait_for

WALL_CLOCK = {"wall_s"}  # columns that differ between any two runs (seconds of wall clock)


def _finishing_training_job(wd: Path):
    """A training job whose log shows it ran and whose outputs are both written: the job is exiting
    and Snakemake has not recorded it as finished yet, so its outputs are still marked incomplete
    (the state from which a resume without `rerun-incomplete` stops with IncompleteFilesException)."""
    for log in wd.glob("logs/*/train_*/*/r*.log"):
        dataset, model, replica = log.parts[-4], log.parts[-2], log.stem
        out = wd / "results" / dataset / "models" / model / replica
        if log.stat().st_size and (out / "model.pt").exists() and (out / "metrics.json").exists():
            return out
    return None


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows, f"{path} is empty"
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows]


@pytest.mark.slow
def test_killed_run_resumes_with_the_readme_commands(tiny_run, tmp_path):
    run, *resume = readme_commands(RESUME_HEADING)
    assert resume[-1] == run, "the README resumes with the same command again"
    wd = copy_workflow(tmp_path / "wf")
    with open(tmp_path / "killed.log", "w") as console:
        proc = subprocess.Popen([sys.executable, "-m", "snakemake", *run], cwd=wd, env=env(),
                                stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            finishing = wait_for(lambda: _finishing_training_job(wd), proc, 900)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert finishing, "the run ended or timed out before a training job finished:\n" + \
        (tmp_path / "killed.log").read_text()[-3000:]
    print(f"killed while {_finishing_training_job(wd).relative_to(wd)} was finishing")
    assert not (wd / "results/report/summary.csv").exists()
    # everything that exists under a final name is complete and valid: outputs are written atomically
    for f in (wd / "results").rglob("*"):
        if f.name.startswith("."):
            continue  # temporary files of interrupted writes: never an output name
        if f.suffix == ".pt":
            safe_load(f)
        elif f.suffix == ".json":
            read_json(f)
    # exactly the README's commands: unlock, then the same command again
    for args in resume:
        p = snakemake(wd, *args, timeout=1200)
    assert "rule prepare:" not in p.stdout + p.stderr, "finished work was redone after the interruption"
    for name in ("summary.csv", "models.csv"):
        assert _rows(wd / "results/report" / name) == _rows(tiny_run / "results/report" / name), \
            f"{name}: the resumed run differs from the uninterrupted one"
    check_science(wd, TINY, tmp_path / "science")


def test_plain_run_without_cifar_shows_the_prepare_error(tmp_path):
    """`snakemake --cores 2 all` on config.yaml (CIFAR-10) with no CIFAR and no network: the console
    shows the one line of `spkrobust prepare` that says what to do, not only "check log file(s)"."""
    wd = copy_workflow(tmp_path / "wf")
    e = env()
    e.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")  # no download
    p = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "all"], cwd=wd, env=e, check=False,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode != 0
    line = (wd / "logs/cifar10/prepare.log").read_text().splitlines()[-1]
    assert re.fullmatch(r"spkrobust prepare: error: cifar10: missing data_batch_1, .* in data/cifar-10-batches-py "
                        r".*; put torchvision's extracted cifar-10-batches-py/ under the data root data", line), line
    assert line in (p.stdout + p.stderr).splitlines(), (p.stdout + p.stderr)[-3000:]
    assert not (wd / "results/cifar10/data.pt").exists()


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

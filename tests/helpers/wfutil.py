"""Helpers for the workflow tests: copy the workflow into a scratch directory, run Snakemake as a
real subprocess and read its dry-run plan."""
from __future__ import annotations

import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# What a run needs: the workflow, its default profile (profiles/default, loaded by Snakemake itself as
# in a user's clone) and the library it runs (rules call `python -m spkrobust` in the working
# directory and list spkrobust/*.py as inputs, so the copy's library is the one tracked).
WORKFLOW_FILES = ("Snakefile", "config.yaml", "workflow", "profiles", "spkrobust", "tests/presets")
TINY = "tests/presets/tiny.yaml"
RESUME_HEADING = "Resuming after Snakemake was killed"  # README: run, unlock, run again (tiny preset)


def readme_commands(heading: str) -> list[list[str]]:
    """The `snakemake` commands of the first ```bash block under README heading `heading`, as the
    argument lists that follow `snakemake` (comments dropped), so that tests run the README's words."""
    text = (REPO / "README.md").read_text()
    m = re.search(rf"^#+ {re.escape(heading)}\n.*?^```bash\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert m, f"README.md has no ```bash block under the heading {heading!r}"
    cmds = [shlex.split(line, comments=True) for line in m.group(1).splitlines()]
    cmds = [c for c in cmds if c]
    assert cmds and all(c[0] == "snakemake" for c in cmds), cmds
    return [c[1:] for c in cmds]


def copy_workflow(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dst / name)
    return dst


def copy_run(src: Path, dst: Path) -> Path:
    """Copy a finished run (results, metadata) keeping modification times."""
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def env() -> dict:
    e = dict(os.environ)
    # rules run `python -m spkrobust`: make that the interpreter running the tests
    e["PATH"] = os.path.dirname(sys.executable) + os.pathsep + e.get("PATH", "")
    e.pop("SNAKEMAKE_PROFILE", None)
    return e


def snakemake(cwd: Path, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *args]
    t0, r0 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p.seconds = time.monotonic() - t0  # wall clock
    # CPU seconds of Snakemake and its children: robust to other load on a shared 2-core machine
    p.cpu_seconds = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}) in {cwd}:\n"
                             f"{p.stdout[-6000:]}\n{p.stderr[-6000:]}")
    return p


def plan(cwd: Path, *args: str, timing: dict | None = None) -> dict[str, int]:
    """Dry-run; returns {rule: number of jobs that would run} (empty when nothing is to be done)."""
    p = snakemake(cwd, "-n", "--cores", "2", *args)
    if timing is not None:
        timing.update(wall=p.seconds, cpu=p.cpu_seconds)
    out = p.stdout + p.stderr
    if "Nothing to be done" in out:
        return {}
    m = re.search(r"Job stats:\n(.*?)\n\s*total\s+\d+", out, re.S)
    assert m, f"no job stats in dry-run output:\n{out[-3000:]}"
    counts = {}
    for line in m.group(1).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def wait_for(pred, proc: subprocess.Popen | None, timeout: float, interval: float = 0.05) -> bool:
    """Poll `pred` until it holds (True), `proc` has ended or `timeout` seconds passed (False)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(interval)
    return False


def write_preset(cwd: Path, name: str, edit) -> str:
    """Load the tiny preset of `cwd`, apply `edit(cfg)`, write it as `name`; return its path."""
    cfg = yaml.safe_load((cwd / TINY).read_text())
    edit(cfg)
    (cwd / name).write_text(yaml.safe_dump(cfg, sort_keys=False))
    return name

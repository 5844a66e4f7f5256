"""The dry-run part of ``spkrobust bench``: how long ``snakemake -n --forceall`` takes on a
paper-scale grid (config.yaml, enlarged until it has at least ``min_jobs`` jobs)."""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


# ---- Snakemake dry-run ---------------------------------------------------------------------------

def _big_config(base: dict, level: int = 0) -> dict:
    """config.yaml enlarged toward a paper-scale grid: three datasets and a T sweep of the
    spike-trained SNN (as in the studies); ``level`` 1 adds a wider sweep and a third replica."""
    import copy

    cfg = copy.deepcopy(base)
    cfg["datasets"] = ["cifar10", "cifar100", "fashion_mnist"]
    for spec in cfg.get("models", {}).values():
        if isinstance(spec, dict) and spec.get("kind") == "snn" and "sweep" not in spec:
            spec["sweep"] = {"T": [25, 50, 100]} if level == 0 else {"T": [10, 25, 50, 100, 200]}
            break
    if level >= 1:
        cfg["replicas"] = max(3, int(cfg.get("replicas", 2) or 2))
    return cfg


def snakemake_dryrun(log, timeout: float = 600.0, min_jobs: int = 1000) -> dict:
    """``snakemake -n --forceall --quiet rules`` from the repo root on a paper-scale config (the
    first of config.yaml's enlargements with at least ``min_jobs`` jobs; config.yaml itself when
    they fail)."""
    out = {"dryrun_jobs": None, "dryrun_seconds": None, "dryrun_config": None}
    snakefile = REPO / "Snakefile"
    if not snakefile.exists():
        out["dryrun_error"] = f"no Snakefile at {snakefile} (workflow not written yet)"
        log(f"  dry-run skipped: {out['dryrun_error']}")
        return out
    exe = [sys.executable, "-m", "snakemake"]
    try:
        import snakemake  # noqa: F401
    except ImportError:
        out["dryrun_error"] = "snakemake is not installed in this Python environment"
        log(f"  dry-run skipped: {out['dryrun_error']}")
        return out
    try:
        import yaml

        base = yaml.safe_load((REPO / "config.yaml").read_text()) if (REPO / "config.yaml").exists() else None
    except Exception as e:  # noqa: BLE001
        base, out["dryrun_config_note"] = None, f"config.yaml unreadable: {e}"
    with tempfile.TemporaryDirectory() as tmp:
        attempts = []
        if base is not None:
            for level in (0, 1):
                big = Path(tmp) / f"paper_grid_{level}.yaml"
                big.write_text(yaml.safe_dump(_big_config(base, level), sort_keys=False))
                label = "config.yaml enlarged (3 datasets, T sweep" + (", 3 replicas)" if level else ")")
                attempts.append((label, ["--configfile", str(big)]))
        attempts.append(("config.yaml", []))
        for label, extra in attempts:
            cmd = exe + ["-n", "--forceall", "--quiet", "rules", "--cores", "1", "--nolock", *extra]
            t0 = time.perf_counter()
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), timeout=timeout)
            except subprocess.TimeoutExpired:
                out["dryrun_error"] = f"dry-run ({label}) took over {timeout:.0f} s"
                log(f"  {out['dryrun_error']}")
                continue
            dt = time.perf_counter() - t0
            m = re.search(r"^\s*total\s+(\d+)\s*$", r.stdout + "\n" + r.stderr, re.M)
            if r.returncode == 0 and m:
                jobs = int(m.group(1))
                log(f"  snakemake -n ({label}): {jobs} jobs in {dt:.2f} s")
                if out["dryrun_jobs"] is None or jobs > out["dryrun_jobs"]:
                    out.update(dryrun_jobs=jobs, dryrun_seconds=dt, dryrun_config=label)
                    out.pop("dryrun_error", None)
                if jobs >= min_jobs:
                    return out
                continue
            tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-3:]
            err = f"dry-run ({label}) failed (rc {r.returncode}): {' | '.join(tail)[:400]}"
            log(f"  {err}")
            if out["dryrun_jobs"] is None:
                out["dryrun_error"] = err
    if out["dryrun_jobs"] is not None and out["dryrun_jobs"] < min_jobs:
        out["dryrun_note"] = f"largest grid tried has {out['dryrun_jobs']} jobs (< {min_jobs})"
    return out



"""The tiny preset end to end on a real single-host SLURM cluster, through the SLURM profile.

Starts munged/slurmctld/slurmd on this host (tests/slurm_cluster.py), runs Snakemake with
`--workflow-profile` = profiles/slurm overlaid with this host's limits, checks that the
jobs ran as SLURM jobs and tears the cluster down.  Skipped only when slurmctld is not installed.
"""
from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest
import yaml

from slurm_cluster import SlurmCluster, missing_binaries
from wfutil import REPO, TINY, copy_workflow, snakemake

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("slurmctld") is None and not Path("/usr/sbin/slurmctld").exists(),
                       reason="slurmctld is not installed (Debian: apt-get install slurm-wlm munge)"),
]

PROFILE = REPO / "profiles/slurm/config.yaml"


def host_profile(dst: Path) -> Path:
    """profiles/slurm with only the host-specific numbers changed: this host has 2 CPUs,
    no GPU (the tiny preset sets device: cpu, so no rule asks for one) and little memory."""
    prof = yaml.safe_load(PROFILE.read_text())
    prof["default-resources"] = {**prof["default-resources"], "runtime": 30, "mem_mb": 1500}
    prof["set-resources"] = {rule: {**res, "mem_mb": 1500, "runtime": 30}
                             for rule, res in (prof.get("set-resources") or {}).items()}
    prof.update({
        "max-threads": 1,  # each job 1 CPU, so two run side by side on the 2-CPU node
        "latency-wait": 5,
        "seconds-between-status-checks": 2,
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-keep-successful-logs": True,
        # a group job requests the sum of its members (1 CPU each here): 2 fit the 2-CPU node
        "group-components": ["evaluate=2"],
    })
    dst.mkdir(parents=True)
    (dst / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    return dst


def test_slurm_profile_is_valid_for_the_plugin():
    prof = yaml.safe_load(PROFILE.read_text())
    assert prof["executor"] == "slurm"
    assert prof["slurm-no-account"] is True and prof["slurm-status-command"] == "squeue"
    assert "slurm_partition" in prof["default-resources"]
    assert any("evaluate" in g for g in prof["group-components"])
    # it replaces profiles/default (Snakemake loads one workflow profile), so it repeats the run
    # behaviour the README's resume instructions rely on; the two must not drift apart
    default = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    for key in ("rerun-incomplete", "keep-going", "printshellcmds", "show-failed-logs", "rerun-triggers"):
        assert prof[key] == default[key], key
    assert prof["rerun-incomplete"] is True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_binaries()
    assert not missing, f"SLURM/munge binaries missing: {missing}"
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


def test_tiny_preset_on_slurm(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    wd = copy_workflow(tmp_path / "wf")
    prof = host_profile(tmp_path / "profile")
    p = snakemake(wd, "--workflow-profile", str(prof), "--configfile", TINY, timeout=1500)
    out = p.stdout + p.stderr
    print(f"tiny preset on SLURM: {p.seconds:.0f} s")

    with open(wd / "results/report/summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 12
    # every job went through sbatch: one SLURM job id per submitted (group) job, and its SLURM log
    ids = re.findall(r"has been submitted with SLURM jobid (\d+)", out)
    assert len(ids) >= 10, out[-4000:]
    slurm_logs = list((wd / ".snakemake/slurm_logs").rglob("*.log"))
    assert len(slurm_logs) >= len(ids), (ids, slurm_logs)
    assert any("train_ann" in str(x) for x in slurm_logs)
    # evaluation jobs were packed into group jobs (group-components)
    assert "group" in out.lower() and any("group" in str(x) for x in slurm_logs)

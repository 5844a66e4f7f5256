"""The tiny preset end to end on a real single-host SLURM cluster, through the SLURM profile.

Starts munged/slurmctld/slurmd on this host (tests/helpers/slurm_cluster.py), runs Snakemake with
`--workflow-profile` = profiles/slurm overlaid with this host's limits, kills it while its jobs run
and resumes as the README says (scancel, unlock, the same command), checks that the jobs ran as
SLURM jobs and tears the cluster down.  Skipped only when slurmctld is not installed.
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.slurm_cluster import SlurmCluster, missing_binaries
from helpers.science import check_science
from helpers.wfutil import REPO, RESUME_HEADING, TINY, copy_workflow, env, readme_commands, snakemake, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("slurmctld") is None and not Path("/usr/sbin/slurmctld").exists(),
                       reason="slurmctld is not installed (Debian: apt-get install slurm-wlm munge)"),
]

PROFILE = REPO / "profiles/slurm/config.yaml"
BUDGET_MB = 1500


def host_profile(dst: Path) -> Path:
    """profiles/slurm with only the host-specific numbers changed: this host has 2 CPUs,
    no GPU (the tiny preset sets device: cpu, so no rule asks for one) and little memory: the
    budget per job is 1500 MB (each job then requests the plan's memory, at most that)."""
    prof = yaml.safe_load(PROFILE.read_text())
    prof["default-resources"] = {**prof["default-resources"], "mem_mb": BUDGET_MB}
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
    # cluster facts only: memory and runtime per job come from the plan (workflow/rules/common.smk)
    assert not prof.get("set-resources")
    assert not {"mem_mb", "runtime", "gpu_mem_mb"} & set(prof["default-resources"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_binaries()
    assert not missing, f"SLURM/munge binaries missing: {missing}"
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


def test_tiny_preset_on_slurm_killed_and_resumed(cluster, tmp_path, monkeypatch):
    """The README's SLURM resume: Snakemake is SIGKILLed while its training jobs run on the cluster;
    `scancel --name RUN_ID`, then the README's unlock and the same command, each with the profile."""
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    wd = copy_workflow(tmp_path / "wf")
    prof = host_profile(tmp_path / "profile")
    profile = ("--workflow-profile", str(prof))
    run = ("all", *profile, "--configfile", TINY)
    with open(tmp_path / "killed.log", "w") as console:
        proc = subprocess.Popen([sys.executable, "-m", "snakemake", *run], cwd=wd, env=env(),
                                stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
        try:  # a training job runs on the cluster once its log has content
            running = wait_for(lambda: any(f.stat().st_size for f in wd.glob("logs/*/train_*/*/r*.log")), proc, 900)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    killed = (tmp_path / "killed.log").read_text()
    assert running, killed[-3000:]
    run_id = re.search(r"SLURM run ID: (\S+)", killed).group(1)
    squeue = ["squeue", "--noheader", "--name", run_id]
    assert subprocess.run(squeue, capture_output=True, text=True, check=True).stdout.strip(), \
        "the killed run's jobs were expected to outlive it on the cluster"
    subprocess.run(["scancel", "--name", run_id], check=True)
    assert wait_for(lambda: not subprocess.run(squeue, capture_output=True, text=True, check=True).stdout.strip(),
                    None, 60, interval=1)
    _, unlock, _ = readme_commands(RESUME_HEADING)
    snakemake(wd, *unlock, *profile)
    p = snakemake(wd, *run, timeout=1500)
    out = p.stdout + p.stderr
    print(f"tiny preset on SLURM, resumed: {p.seconds:.0f} s")
    assert "rule prepare:" not in out, "finished work was redone after the interruption"

    with open(wd / "results/report/summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 12
    check_science(wd, TINY, tmp_path / "science")
    # every job went through sbatch: one SLURM job id per submitted (group) job, and its SLURM log
    ids = re.findall(r"has been submitted with SLURM jobid (\d+)", out)
    assert len(ids) >= 10, out[-4000:]
    slurm_logs = list((wd / ".snakemake/slurm_logs").rglob("*.log"))
    assert len(slurm_logs) >= len(ids), (ids, slurm_logs)
    assert any("train_ann" in str(x) for x in slurm_logs)
    # jobs were submitted with the plan's resources: the train_ann job's mem_mb is the plan's at the budget
    from spkrobust.config.expand import expand_models, load_configs
    from spkrobust.config.validate import validate_config
    from spkrobust.tools import jobs

    cfg = validate_config(load_configs([REPO / TINY]))
    b = jobs.budget(cfg, 1, BUDGET_MB)
    want = jobs.job(cfg, expand_models(cfg), b, "train_ann", cfg["datasets"][0], "ann").resources(b)
    got = re.search(r"rule train_ann:.*?resources: ([^\n]*)", killed + out, re.S)
    assert got and f"mem_mb={want['mem_mb']}" in got.group(1) and f"runtime={want['runtime']}" in got.group(1), \
        (want, got and got.group(1))
    assert want["mem_mb"] <= BUDGET_MB
    # evaluation jobs were packed into group jobs (group-components)
    assert "group" in out.lower() and any("group" in str(x) for x in slurm_logs)

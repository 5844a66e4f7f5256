"""The Snakemake workflow, run for real as a subprocess (no mocks).

* fast: dry-runs of config.yaml and of a >=1000-job grid, preset replacing config.yaml, schema
  defaults and errors;
* slow: one end-to-end run of the tiny preset (session fixture, ~2 min on 2 cores), then rerun
  behaviour checked by dry-runs on copies of that finished run.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.science import check_science
from helpers.wfutil import REPO, TINY, copy_run, copy_workflow, plan, snakemake, write_preset


# --------------------------------------------------------------------------------------------------
# dry-runs (fast)

def test_default_config_dry_run_builds_full_grid_without_touching_data(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    timing = {}
    counts = plan(wd, timing=timing)
    # CIFAR-10: 3 models x 2 replicas are sources, replica 1 of each a target, 2 attacks x 5 eps
    assert counts["evaluate"] == 6 * 2 * 5  # one job per adversarial set, each evaluating 3 targets
    assert counts["craft"] == 6 * 2 * 5
    assert counts["grad"] == 6  # FGSM: one gradient per source replica, shared by all eps
    assert counts["clean"] == 3
    assert counts["train_ann"] == counts["convert"] == counts["train_snn"] == 2
    assert counts["prepare"] == 1
    assert counts["aggregate"] == counts["render_report"] == 1
    assert not (wd / "results").exists() and not (wd / "data").exists()
    assert timing["cpu"] < 10, f"dry-run of config.yaml took {timing}"


def test_large_grid_dry_run_is_fast(tmp_path):
    """A sweep config of >=1000 jobs: the Snakefile must not import torch or do per-job work."""
    wd = copy_workflow(tmp_path / "wf")

    def big(cfg):
        for m in cfg["models"].values():
            m.pop("replicas", None)  # every model: 2 replicas
        cfg["models"]["snn_bp"]["sweep"] = {"T": [2, 4, 8, 16], "leak": [0.9, 0.95, 0.99, 1.0]}
        cfg["eps"] = [f"{e}/255" for e in (1, 2, 3, 4, 6, 8, 12, 16)]
        # every sweep member is a source; three targets (each evaluation job loads every target)
        cfg["grid"] = {"sources": "all", "targets": ["ann", "snn_conv", "snn_bp-T8-leak0.99"], "target_replicas": [1]}

    preset = write_preset(wd, "big.yaml", big)
    timing = {}
    counts = plan(wd, "--configfile", preset, timing=timing)
    total = sum(counts.values())
    assert total >= 1000, counts
    # CPU seconds (not wall clock) so that other load on a shared CI machine does not fail it.  Each job's
    # resources (mem_mb, gpu_mem_mb, runtime) now come from the memory plan (issue #20): 10.8-13.5 CPU-s
    # measured on an idle 2-core machine (Snakemake inspects each resource callable per job); importing
    # torch at DAG time is caught by test_dag_time_modules_import_no_torch below.
    assert timing["cpu"] <= 20, f"dry-run of {total} jobs took {timing}"
    print(f"dry-run of {total} jobs: {timing}")


def test_dag_time_modules_import_no_torch():
    """What the Snakefile imports to build the DAG and size each job stays torch-free."""
    code = ("import sys; import spkrobust.config.expand, spkrobust.config.validate, spkrobust.nets.memory, "
            "spkrobust.tools.jobs, spkrobust.tools.codedeps; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_preset_replaces_config_yaml(tmp_path):
    """--configfile PRESET must not be merged with config.yaml (that would union the models)."""
    wd = copy_workflow(tmp_path / "wf")
    p = snakemake(wd, "-n", "--cores", "1", "--configfile", TINY)
    out = p.stdout + p.stderr
    assert "results/fashion_mnist/" in out
    assert "cifar10" not in out
    # `--config` still overrides single keys of config.yaml when no preset is given
    p = snakemake(wd, "-n", "--cores", "1", "--config", "datasets=[fashion_mnist]")
    out = p.stdout + p.stderr
    assert "results/fashion_mnist/models/snn_bp/r2/model.pt" in out and "cifar10" not in out


def test_schema_rejects_bad_config_with_a_clear_message(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    preset = write_preset(wd, "bad.yaml", lambda c: c["models"]["ann"].update(kind="mlp"))
    p = snakemake(wd, "-n", "--cores", "1", "--configfile", preset, check=False)
    assert p.returncode != 0
    assert "mlp" in p.stdout + p.stderr


def test_semantic_config_error_names_the_key(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    preset = write_preset(wd, "bad.yaml", lambda c: c["models"]["snn_bp"].update({"from": "nope"}))
    p = snakemake(wd, "-n", "--cores", "1", "--configfile", preset, check=False)
    assert p.returncode != 0
    assert "models.snn_bp.from" in p.stdout + p.stderr


def test_schema_fills_defaults(tmp_path):
    """Keys a preset leaves out take the schema defaults (not config.yaml's values)."""
    wd = copy_workflow(tmp_path / "wf")

    def minimal(cfg):
        for k in ("seed", "data_root", "grid", "eval"):
            cfg.pop(k)

    preset = write_preset(wd, "min.yaml", minimal)
    counts = plan(wd, "--configfile", preset)
    # grid defaults to all sources x all targets (replica 1): 3 source replicas... plus snn_conv
    assert counts["evaluate"] == (2 + 1 + 1) * 2 * 1  # one job per adversarial set


def test_gpu_resource_follows_device(tmp_path):
    """Training and crafting ask for a GPU unless the config pins the CPU (the tiny preset does)."""
    wd = copy_workflow(tmp_path / "wf")
    out = snakemake(wd, "-n", "--cores", "1", "--configfile", TINY).stdout
    assert "gpu=0" in out and "gpu=1" not in out
    out = snakemake(wd, "-n", "--cores", "1").stdout
    assert "gpu=1" in out


# --------------------------------------------------------------------------------------------------
# one real end-to-end run of the tiny preset, shared by the rerun tests

@pytest.fixture
def finished_copy(tiny_run, tmp_path) -> Path:
    return copy_run(tiny_run, tmp_path / "wf")


@pytest.mark.slow
def test_tiny_end_to_end(tiny_run, tmp_path):
    wd = tiny_run
    cfg = yaml.safe_load((wd / TINY).read_text())
    with open(wd / "results/report/summary.csv") as f:
        rows = list(csv.DictReader(f))
    # sources ann r1, ann r2, snn_bp r1; 2 attacks; 1 eps; targets ann r1, snn_bp r1
    assert len(rows) == 3 * len(cfg["attacks"]) * len(cfg["eps"]) * 2
    assert {r["setting"] for r in rows} == {"white-box", "black-box", "transfer"}
    with open(wd / "results/report/models.csv") as f:
        models = list(csv.DictReader(f))
    assert len(models) == 2 + 1 + 1  # ann r1, r2; snn_conv r1; snn_bp r1
    for name in ("index.md", "tables.md", "claims.md", "checks.md", "acc_vs_eps.png"):
        assert (wd / "results/report" / name).stat().st_size > 0
    # every job left a log and a benchmark
    assert (wd / "logs/fashion_mnist/train_ann/ann/r1.log").exists()
    assert (wd / "benchmarks/fashion_mnist/craft/ann/r1/fgsm/0.1.tsv").exists()
    rec = json.loads(next((wd / "results/fashion_mnist/eval").rglob("*.json")).read_text())
    assert rec["dataset"] == "fashion_mnist" and 0.0 <= rec["adv_acc"] <= 1.0
    # the preset's eval section reaches the stages: R repeats for stochastic targets, 1 otherwise
    reps = cfg["eval"]["repeats"]
    assert reps != 3  # differs from the schema default, so a dropped eval section shows
    recs = [json.loads(p.read_text()) for p in (wd / "results/fashion_mnist/eval").rglob("*.json")]
    assert {r["repeats"] for r in recs if r["stochastic"]} == {reps}
    assert {r["repeats"] for r in recs if not r["stochastic"]} == {1}
    assert {r["n"] for r in recs} == {cfg["data"]["test_size"]}
    clean = json.loads((wd / "results/fashion_mnist/clean/snn_bp/r1.json").read_text())
    assert clean["stochastic"] and clean["repeats"] == reps
    # the networks are alive and the attacks work (tests/helpers/science.py)
    check_science(wd, TINY, tmp_path / "science")


@pytest.mark.slow
def test_report_html(finished_copy):
    snakemake(finished_copy, "--configfile", TINY, "--report", "report.html")
    html = (finished_copy / "report.html").read_text()
    assert len(html) > 10_000
    # the first page opens on the answer (results/report/description.rst), not only the DAG
    assert "Headline" in html and "White-box accuracy drop, SNN against ANN" in html
    assert "The studies" in html and "Numerical environment of the jobs" in html


TIMINGS = {"summary.csv": (), "models.csv": ("wall_s",)}  # columns that are timings, not results


def _rows_without_timings(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in TIMINGS[path.name]} for r in csv.DictReader(f)]


@pytest.mark.slow
def test_same_command_twice_gives_an_identical_report(tiny_run, tmp_path):
    """The same command on one machine, run again from scratch in a fresh copy: identical tables and
    claims (timings aside), and the run records the environment that decides bit-identity."""
    from helpers.wfutil import RESUME_HEADING, readme_commands

    wd = copy_workflow(tmp_path / "wf")
    snakemake(wd, *readme_commands(RESUME_HEADING)[0], timeout=1200)
    for name in TIMINGS:
        first, second = (_rows_without_timings(d / "results/report" / name) for d in (tiny_run, wd))
        assert first and first == second, f"{name} differs between two runs of the same command"
    for name in ("claims.md", "tables.md", "description.rst"):
        assert (tiny_run / "results/report" / name).read_text() == (wd / "results/report" / name).read_text(), name
    assert "Numerical environment of the jobs" in (wd / "results/report/description.rst").read_text()


@pytest.mark.slow
def test_untouched_rerun_has_nothing_to_do(finished_copy):
    assert plan(finished_copy, "--configfile", TINY) == {}


@pytest.mark.slow
def test_adding_an_eps_reruns_only_that_eps(finished_copy):
    preset = write_preset(finished_copy, "more_eps.yaml", lambda c: c["eps"].append("4/255"))
    counts = plan(finished_copy, "--configfile", preset)
    # 3 source replicas x 2 attacks crafted at the new eps (FGSM from the existing gradient),
    # each evaluated on 2 targets; then the tables and report
    assert counts == {"craft": 6, "evaluate": 6, "aggregate": 1, "render_report": 1, "all": 1}


@pytest.mark.slow
def test_editing_eval_repeats_reruns_evaluation_not_crafting(finished_copy):
    """grad and craft have their own config slice: eval.repeats is read by clean and evaluate only."""
    preset = write_preset(finished_copy, "reps.yaml", lambda c: c["eval"].update(repeats=c["eval"]["repeats"] + 1))
    counts = plan(finished_copy, "--configfile", preset)
    assert counts == {"clean": 2, "evaluate": 6, "aggregate": 1, "render_report": 1, "all": 1}


@pytest.mark.slow
def test_changing_snn_T_reruns_that_snn_only(finished_copy):
    preset = write_preset(finished_copy, "t3.yaml", lambda c: c["models"]["snn_bp"].update(T=3))
    counts = plan(finished_copy, "--configfile", preset)
    assert counts == {
        "train_snn": 1,  # snn_bp r1
        "clean": 1,  # snn_bp as target
        "grad": 1,  # snn_bp as FGSM source
        "craft": 2,  # snn_bp r1 x {fgsm, pgd}
        "evaluate": 6,  # every adversarial set: snn_bp is one of the targets each job evaluates
        "aggregate": 1,
        "render_report": 1,
        "all": 1,
    }


@pytest.mark.slow
def test_editing_attacks_module_reruns_attacks_not_training(finished_copy):
    attacks = finished_copy / "spkrobust/attacks/registry.py"
    attacks.write_text(attacks.read_text() + "\n# edited by test\n")
    counts = plan(finished_copy, "--configfile", TINY)
    assert "train_ann" not in counts and "train_snn" not in counts and "convert" not in counts
    assert "prepare" not in counts
    # clean accuracy reruns too: spkrobust/evaluation/evaluate.py imports helpers from attacks.py
    assert counts == {"grad": 3, "craft": 6, "clean": 2, "evaluate": 6, "aggregate": 1, "render_report": 1,
                      "all": 1}


@pytest.mark.slow
def test_touching_without_editing_reruns_nothing(finished_copy):
    """Snakemake 9 compares checksums of small inputs whose mtime changed: a bare touch is a no-op."""
    os.utime(finished_copy / "spkrobust/attacks/registry.py")
    assert plan(finished_copy, "--configfile", TINY) == {}


@pytest.mark.slow
def test_editing_report_module_reruns_only_the_report(finished_copy):
    report = finished_copy / "spkrobust/report/render.py"
    report.write_text(report.read_text() + "\n# edited by test\n")
    counts = plan(finished_copy, "--configfile", TINY)
    assert counts == {"aggregate": 1, "render_report": 1, "all": 1}


def test_quick_preset_covers_the_study(tmp_path):
    """quick: ANN, converted IF and spike-trained LIF SNNs, three replicas of every model (training-seed
    CIs), >= 350 test images (a point is 3.5 images); its T and leak sweeps are sweeps of spike-trained SNNs, each member
    trained from the one converted parent (the 2020 study's design); the studies' PGD, able to reach
    every eps, and an adaptive ensemble; every replica crafts (white-box rows, cycle pairing); its
    dry-run builds the whole grid (job counts: tests/workflow/test_presets.py)."""
    wd = copy_workflow(tmp_path / "wf")
    cfg = yaml.safe_load((wd / "workflow/presets/quick.yaml").read_text())
    assert cfg["datasets"] == ["fashion_mnist"] and cfg["replicas"] >= 3 and cfg["data"]["test_size"] >= 350
    kinds = {m["kind"] for m in cfg["models"].values()}
    assert kinds == {"ann", "convert", "snn"}
    from spkrobust.config.expand import expand_models

    models = expand_models(cfg)
    for key in ("T", "leak"):
        members = [m for m in models.values() if key in (m.get("sweep_values") or {})]
        assert len({m[key] for m in members}) >= 2, key
        assert {m["kind"] for m in members} == {"snn"}, key  # spike-trained, never converted
        parents = {m["from"] for m in members}
        assert len(parents) == 1 and models[parents.pop()]["kind"] == "convert", key
    assert {a["type"] for a in cfg["attacks"].values()} >= {"pgd", "ensemble"} and "8/255" in cfg["eps"]
    from spkrobust.config.expand import parse_alpha, parse_eps

    for a in cfg["attacks"].values():
        if a["type"] == "pgd":
            for e in map(parse_eps, cfg["eps"]):
                assert a["steps"] * parse_alpha(a["alpha"], e) >= e - 1e-12
    assert cfg["grid"]["pairing"] == "cycle" and cfg["grid"]["target_replicas"] == [1, 2, 3]
    counts = plan(wd, "--configfile", "workflow/presets/quick.yaml")
    assert counts["evaluate"] == 2 * 3 * len(cfg["attacks"]) * len(cfg["eps"])  # 2 sources x 3 replicas

"""The two study presets dry-run to complete DAGs with the expected job counts (no data touched)."""
from __future__ import annotations

import re

import pytest
import yaml

from spkrobust.config.expand import grid
from spkrobust.config.validate import validate_config

from helpers.wfutil import copy_workflow, plan, snakemake


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("presets") / "wf")


def test_study2019_dag(wd):
    counts = plan(wd, "--configfile", "workflow/presets/study2019.yaml")
    # VGG9 on CIFAR-10: ann, snn_conv, snn_bp x 2 replicas; 3 attacks x 3 eps; 3 targets (replica 1)
    source_replicas = 3 * 2
    assert counts["prepare"] == 1
    assert counts["train_ann"] == counts["convert"] == counts["train_snn"] == 2
    assert counts["clean"] == 3
    assert counts["grad"] == source_replicas  # one FGSM gradient per source replica
    assert counts["craft"] == source_replicas * 3 * 3
    assert counts["evaluate"] == source_replicas * 3 * 3  # one job per adversarial set (3 targets each)
    assert counts["aggregate"] == 1
    assert not (wd / "results").exists()


def test_study2020_dag(wd):
    counts = plan(wd, "--configfile", "workflow/presets/study2020.yaml")
    datasets = 2  # CIFAR-10 and CIFAR-100
    # per dataset: ann5, ann11, conv5, conv11, snn11 x 2 replicas; snn5 T sweep (3) x 2 replicas;
    # snn5_leak (4 leaks) and snn5_neuron (IF, LIF) with one replica each
    anns, convs, snns = 2 * 2, 2 * 2, 3 * 2 + 4 + 2 + 2
    model_names = 2 + 2 + 3 + 4 + 2 + 1
    source_replicas = anns + convs + snns
    assert counts["prepare"] == datasets
    assert counts["train_ann"] == datasets * anns
    assert counts["convert"] == datasets * convs
    # snn5-T100 = snn5_leak-leak0.99 = snn5_neuron-neuronlif and snn5_leak-leak1.0 = snn5_neuron-neuronif are
    # one training each (config.expand.aliases): 3 trainings per dataset are made once
    assert counts["train_snn"] == datasets * (snns - 3)
    assert counts["clean"] == datasets * model_names
    assert counts["grad"] == datasets * source_replicas
    assert counts["craft"] == datasets * source_replicas * 2
    assert counts["evaluate"] == datasets * source_replicas * 2  # one job per adversarial set
    cfg = validate_config(yaml.safe_load((wd / "workflow/presets/study2020.yaml").read_text()))
    assert len(grid(cfg)) == datasets * source_replicas * 2 * model_names == 1232  # records


def test_quick_dag_has_three_replicas_white_box_rows_and_the_ensemble(wd):
    counts = plan(wd, "--configfile", "workflow/presets/quick.yaml")
    # ann, snn_conv, snn_bp-T4/-T8, snn_leak-leak0.9/-leak1.0, three replicas each; sources ann and
    # snn_bp-T4 (every replica) x pgd, ensemble; grid.pairing: cycle
    assert counts["train_ann"] == counts["convert"] == 3 and counts["train_snn"] == 4 * 3
    assert counts["clean"] == 6 * 3
    assert counts["craft"] == counts["evaluate"] == 2 * 3 * 2
    cfg = validate_config(yaml.safe_load((wd / "workflow/presets/quick.yaml").read_text()))
    cells = grid(cfg)
    white = {(c["source"], c["source_replica"], c["attack"]) for c in cells if c["setting"] == "white-box"}
    assert white == {(m, r, a) for m in ("ann", "snn_bp-T4") for r in (1, 2, 3) for a in ("pgd", "ensemble")}
    for model in ("ann", "snn_conv", "snn_bp-T4"):  # the headline's models: three target replicas each
        assert {c["target_replica"] for c in cells if c["target"] == model} == {1, 2, 3}, model
    # every target replica is attacked by one independent chain (never its own lineage but white-box)
    for c in cells:
        assert c["setting"] == "white-box" or c["source_replica"] != c["target_replica"], c
    assert len(cells) == 2 * 2 * (3 + 6 * 3)  # per source and attack: 3 white-box + 6 targets x 3 replicas
    # the ensemble's first member is the pgd set of the same source replica ({set: pgd}), not a second PGD
    out = snakemake(wd, "-n", "-p", "--cores", "2", "--configfile", "workflow/presets/quick.yaml").stdout
    ens = [line for line in out.splitlines() if "spkrobust craft" in line and '"type":"ensemble"' in line]
    assert len(ens) == 2 * 3
    for line in ens:
        src, rep = re.search(r"models/([^/]+)/r(\d)/model.pt", line).groups()
        assert f"--set pgd=results/fashion_mnist/adv/{src}/r{rep}/pgd/8_255.pt" in line, line
        assert '"type":"pgd"' not in line, line

"""The tiny CIFAR-10 preset through Snakemake and what its finished run must hold (CIFAR and GPU
scenario tests)."""
from __future__ import annotations

import csv
import json

import torch
import yaml

from helpers.cifar import CIFAR10_CLASSES
from helpers.wfutil import snakemake
from spkrobust.config.expand import eps_label, parse_eps
from spkrobust.data.datasets import load_prepared, to_float

TINY_CIFAR10 = "tests/presets/tiny_cifar10.yaml"


def run_tiny_cifar10(wd, cifar_root, *extra: str, timeout: float = 900):
    """The tiny CIFAR-10 preset through Snakemake (local profile) on the fixture's data root."""
    return snakemake(wd, "--workflow-profile", "workflow/profiles/local", "--configfile", TINY_CIFAR10,
                     "--config", f"data_root={cifar_root}", *extra, "--cores", "2", timeout=timeout)


def check_tiny_cifar10_results(wd) -> dict:
    """What a finished tiny CIFAR-10 run must hold; returns the training metrics by model."""
    cfg = yaml.safe_load((wd / TINY_CIFAR10).read_text())
    prep = load_prepared(wd / "results/cifar10/data.pt")
    assert prep.shape == (3, 32, 32) and prep.classes == CIFAR10_CLASSES
    assert len(prep.train_y) == cfg["data"]["train_size"] and len(prep.test_y) == cfg["data"]["test_size"]
    metrics = {m: json.loads((wd / f"results/cifar10/models/{m}/r1/metrics.json").read_text())
               for m in ("ann", "snn_conv", "snn_bp")}
    for name, m in metrics.items():
        assert m["dataset"] == "cifar10" and m["meta"]["in_channels"] == 3 and m["meta"]["image_size"] == 32, name
    with open(wd / "results/report/summary.csv") as f:
        rows = list(csv.DictReader(f))
    # sources ann, snn_bp (one replica each) x FGSM, PGD x 1 eps x targets ann, snn_bp
    assert len(rows) == 2 * 2 * 1 * 2
    assert {r["setting"] for r in rows} == {"white-box", "transfer"}
    assert {r["dataset"] for r in rows} == {"cifar10"}
    for name in ("tables.md", "claims.md", "checks.md", "models.csv", "acc_vs_eps.png"):
        assert (wd / "results/report" / name).stat().st_size > 0
    (eps,) = cfg["eps"]
    for src in ("ann", "snn_bp"):
        for attack in ("fgsm", "pgd"):
            adv = torch.load(wd / f"results/cifar10/adv/{src}/r1/{attack}/{eps_label(eps)}.pt", weights_only=True)
            assert adv["x_adv"].shape == (cfg["data"]["test_size"], 3, 32, 32)
            x = to_float(prep.test_x)
            assert float((adv["x_adv"] - x).abs().max()) <= parse_eps(eps) + 1e-6
            assert float((adv["x_adv"] - x).abs().max()) > parse_eps(eps) / 2, f"{src} {attack}: input left unchanged"
    return metrics

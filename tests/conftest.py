"""Shared fixtures: real (small) Fashion-MNIST subsets and a small trained VGG5 ANN.

Fixtures are session-scoped so the suite prepares data and trains once.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(int(os.environ.get("SPKROBUST_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def small_data_path(tmp_path_factory) -> Path:
    """Real Fashion-MNIST: 3000 train, 500 test, 128 calibration images (seeded)."""
    from spkrobust.data.datasets import prepare
    from spkrobust.io import atomic_save

    path = tmp_path_factory.mktemp("data") / "fashion_mnist.pt"
    atomic_save(prepare("fashion_mnist", "data", train_size=3000, test_size=500, calib_size=128, seed=0), path)
    return path


@pytest.fixture(scope="session")
def small_data(small_data_path):
    from spkrobust.data.datasets import load_prepared

    return load_prepared(small_data_path)


def ann_cfg(name="ann", epochs=2, seed=0, replica=1, **train):
    # a quickly converging ANN for tests (light dropout, no augmentation, cosine LR), not the studies' recipe
    return {"model": {"name": name, "base": name, "kind": "ann", "arch": "vgg5", "dropout": 0.1, "conv_dropout": 0.0,
                      "train": {"epochs": epochs, "lr": 0.05, "batch_size": 64, "augment": False,
                                "lr_schedule": "cosine", **train}},
            "replica": replica, "seed": seed, "device": "cpu"}


@pytest.fixture(scope="session")
def trained_ann_path(small_data, tmp_path_factory) -> Path:
    """A VGG5 ANN trained for real on 3000 Fashion-MNIST images (~75-80% test accuracy)."""
    from spkrobust.training.train import train_ann

    out = tmp_path_factory.mktemp("ann") / "model.pt"
    train_ann(small_data, ann_cfg(), out, out.parent / "metrics.json")
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One real end-to-end Snakemake run of the tiny preset, shared by the workflow and reliability tests:
    the README's command (the one its resume instructions repeat), with the default profile it loads."""
    from helpers.wfutil import RESUME_HEADING, TINY, copy_workflow, readme_commands, snakemake

    run = readme_commands(RESUME_HEADING)[0]
    assert ["--configfile", TINY] == run[run.index("--configfile"):][:2], run
    wd = copy_workflow(tmp_path_factory.mktemp("tiny") / "wf")
    p = snakemake(wd, *run, timeout=1200)
    print(f"tiny preset end to end: {p.seconds:.0f} s")
    (wd / "tiny_seconds.txt").write_text(f"{p.seconds:.1f}\n")
    return wd


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """A data root holding torchvision's cifar-10-batches-py/ and cifar-100-python/ (500 train,
    100 test images each; the first 20 test images are real CIFAR images shipped with foolbox)."""
    from helpers.cifar import write_cifar

    return write_cifar(tmp_path_factory.mktemp("cifar"), n_train=500, n_test=100, seed=0)

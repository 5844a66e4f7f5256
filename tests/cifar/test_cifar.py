"""The paper-scale path on CIFAR (3×32×32): torchvision's on-disk layouts written from real CIFAR
images (tests/helpers/cifar.py), read by ``prepare`` exactly as real downloads are; VGG11 on
3×32×32; CIFAR-100 through prepare, training, conversion and clean accuracy (the stage CLIs);
and the tiny CIFAR-10 preset end to end through Snakemake (slow)."""
from __future__ import annotations

import hashlib
import json
import pickle
import shutil

import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers.cifar import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    FINE_TO_COARSE,
    foolbox_images,
)
from helpers.science import check_science
from helpers.cifar_run import TINY_CIFAR10, check_tiny_cifar10_results, run_tiny_cifar10
from helpers.wfutil import copy_workflow

from spkrobust.cli import main as cli
from spkrobust.config.expand import data_slice, eval_slice, model_slice
from spkrobust.data.datasets import load_prepared, prepare, to_float
from spkrobust.errors import FileProblem



def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_fixture_is_torchvisions_layout_and_prepare_reads_what_torchvision_reads(cifar_root, dataset):
    """torchvision's own CIFAR classes (file lists, meta keys, parsing, md5 check against the
    fixture's checksums) read the fixture; ``prepare`` yields the same images, labels and classes."""
    from torchvision.datasets import CIFAR10, CIFAR100

    tv = CIFAR10 if dataset == "cifar10" else CIFAR100
    base = cifar_root / tv.base_folder
    fixture_tv = type(f"Fixture{tv.__name__}", (tv,), {
        "train_list": [[name, _md5(base / name)] for name, _ in tv.train_list],
        "test_list": [[name, _md5(base / name)] for name, _ in tv.test_list],
        "meta": {**tv.meta, "md5": _md5(base / tv.meta["filename"])},
    })
    d = prepare(dataset, cifar_root, calib_size=32)
    for train, x, y in ((True, d["train_x"], d["train_y"]), (False, d["test_x"], d["test_y"])):
        ref = fixture_tv(str(cifar_root), train=train, download=False)
        assert torch.equal(x, torch.from_numpy(ref.data).permute(0, 3, 1, 2))
        assert y.tolist() == list(ref.targets)
        assert d["classes"] == ref.classes
    assert d["classes"] == (CIFAR10_CLASSES if dataset == "cifar10" else CIFAR100_CLASSES)
    assert d["shape"] == [3, 32, 32] and d["sizes"] == {"train": 500, "test": 100, "calib": 32}


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_prepare_holds_the_real_cifar_images_with_their_labels(cifar_root, dataset):
    real, labels, _ = foolbox_images(dataset)
    assert len(real) == 20
    d = prepare(dataset, cifar_root, calib_size=32)
    # the first test images are foolbox's PNGs, pixel for pixel, labelled as their file names say
    assert torch.equal(d["test_x"][:20], torch.from_numpy(real).permute(0, 3, 1, 2))
    assert d["test_y"][:20].tolist() == labels.tolist()
    # both splits cover every class; real photographs are not flat (std well above generated noise)
    n_classes = 10 if dataset == "cifar10" else 100
    assert set(d["train_y"].tolist()) == set(range(n_classes))
    assert min(float(to_float(img).std()) for img in d["test_x"][:20]) > 0.03
    if dataset == "cifar100":  # coarse labels are in the files (as in the real ones), though nothing reads them
        with open(cifar_root / "cifar-100-python" / "test", "rb") as f:
            raw = pickle.load(f, encoding="latin1")
        assert raw["coarse_labels"][:20] == [FINE_TO_COARSE[v] for v in labels.tolist()]


def test_seeded_subsets_and_a_damaged_batch_is_named(cifar_root, tmp_path):
    a = prepare("cifar10", cifar_root, train_size=100, test_size=30, calib_size=16, seed=3)
    b = prepare("cifar10", cifar_root, train_size=100, test_size=30, calib_size=16, seed=3)
    assert torch.equal(a["train_x"], b["train_x"]) and torch.equal(a["test_idx"], b["test_idx"])
    assert a["source_sha256"] == prepare("cifar10", cifar_root, calib_size=16)["source_sha256"]
    root = tmp_path / "root"
    shutil.copytree(cifar_root / "cifar-10-batches-py", root / "cifar-10-batches-py")
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:5000])
    with pytest.raises(FileProblem, match="data_batch_3"):
        prepare("cifar10", root)


def _sgd_step(model, x, y) -> torch.Tensor:
    """One SGD step in training mode; asserts finite, non-zero weight gradients and moved weights."""
    first = model.layers[0].weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    out = model(x)
    loss = F.cross_entropy(out, y)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(float(g.abs().sum()) > 0 for g in grads), "a weight layer got no gradient"
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(first, model.layers[0].weight)
    return out


def test_vgg11_builds_and_trains_a_step_on_3x32x32(cifar_root, tmp_path):
    """VGG11 (Rathi et al.'s CIFAR-100 network of the 2020 study): its three poolings apply on 32×32
    (8192 features into the classifier); one SGD step of
    the ANN, then of the SNN converted from it (threshold balancing, LIF, T=4, surrogate gradients
    reaching every layer). Direct input: with untrained weights and Poisson input at T=4 the deeper
    half of VGG11 stays silent, so no gradient would reach it."""
    from spkrobust.training.convert import convert
    from spkrobust.io import atomic_save
    from spkrobust.nets.models import build_model, default_meta

    atomic_save(prepare("cifar100", cifar_root, train_size=64, test_size=8, calib_size=16), tmp_path / "d.pt")
    data = load_prepared(tmp_path / "d.pt")
    x, y = to_float(data.train_x[:8]), data.train_y[:8]
    torch.manual_seed(0)
    ann = build_model(default_meta("ann", "vgg11", 3, 32, 100, data.mean, data.std, dropout=0.2))
    assert [k for k, _ in ann.plan].count("pool") == 3
    assert _sgd_step(ann, x, y).shape == (8, 100)
    spec = {"method": "threshold", "scale": 0.7, "T": 4, "calib_T": 4, "neuron": "lif", "leak": 0.99,
            "encoder": "direct"}
    snn = convert(ann, data, spec, seed=0, device=torch.device("cpu"))
    assert snn.meta["arch"] == "vgg11" and len(snn.meta["thresholds"]) == 9 + 2  # 9 convolutions, 2 hidden linear
    assert not snn.meta.get("silent_layers")
    assert _sgd_step(snn, x, y).shape == (8, 100)


def test_cifar100_through_prepare_train_convert_clean(cifar_root, repo, tmp_path):
    """CIFAR-100 through the stage CLIs the workflow runs, with the slices it passes them."""
    cfg = yaml.safe_load((repo / TINY_CIFAR10).read_text())
    cfg.update(datasets=["cifar100"], data_root=str(cifar_root),
               data={"train_size": 200, "test_size": 40, "calib_size": 32})
    data, ann, snn = tmp_path / "data.pt", tmp_path / "ann.pt", tmp_path / "snn_conv.pt"
    assert cli(["prepare", "--dataset", "cifar100", "--cfg", json.dumps(data_slice(cfg, "cifar100")),
                "--out", str(data)]) == 0
    prep = load_prepared(data)
    assert prep.num_classes == 100 and prep.shape == (3, 32, 32) and len(prep.test_y) == 40
    assert cli(["train-ann", "--data", str(data), "--cfg", json.dumps(model_slice(cfg, "ann", 1)),
                "--out", str(ann), "--metrics", str(tmp_path / "ann.json")]) == 0
    assert cli(["convert", "--data", str(data), "--ann", str(ann), "--cfg", json.dumps(model_slice(cfg, "snn_conv", 1)),
                "--out", str(snn), "--metrics", str(tmp_path / "snn_conv.json")]) == 0
    clean_cfg = {**eval_slice(cfg), "dataset": "cifar100", "model": "snn_conv", "replica": 1}
    assert cli(["clean", "--data", str(data), "--model", str(snn), "--cfg", json.dumps(clean_cfg),
                "--out", str(tmp_path / "clean.json")]) == 0
    m = json.loads((tmp_path / "snn_conv.json").read_text())
    assert m["dataset"] == "cifar100" and m["meta"]["num_classes"] == 100 and m["meta"]["in_channels"] == 3
    assert len(m["meta"]["thresholds"]) == 5  # VGG5: 3 convolutions, 2 hidden linear layers
    clean = json.loads((tmp_path / "clean.json").read_text())
    assert clean["dataset"] == "cifar100" and clean["num_classes"] == 100 and clean["n"] == 40
    assert 0.0 <= clean["clean_acc"] <= 1.0


@pytest.mark.slow
def test_tiny_cifar10_preset_end_to_end(cifar_root, tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    p = run_tiny_cifar10(wd, cifar_root)
    print(f"tiny CIFAR-10 preset end to end: {p.seconds:.0f} s")
    metrics = check_tiny_cifar10_results(wd)
    assert all(m["device"] == "cpu" for m in metrics.values())
    # the networks are alive and the attacks work, with the Fashion-MNIST run's margins (issue #24)
    check_science(wd, TINY_CIFAR10, tmp_path / "science", data_root=str(cifar_root))
    assert "Nothing to be done" in run_tiny_cifar10(wd, cifar_root, "-n").stdout


def test_tiny_cifar10_dag(tmp_path):
    """The preset's plan (dry-run, no data touched): one replica of ann, snn_conv, snn_bp on CIFAR-10."""
    from helpers.wfutil import plan

    wd = copy_workflow(tmp_path / "wf")
    counts = plan(wd, "--configfile", TINY_CIFAR10)
    assert counts["prepare"] == counts["train_ann"] == counts["convert"] == counts["train_snn"] == 1
    assert counts["grad"] == 2 and counts["craft"] == 2 * 2 and counts["evaluate"] == 2 * 2
    assert counts["clean"] == 2 and counts["aggregate"] == 1
    assert not (wd / "results").exists()

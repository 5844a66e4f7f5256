"""The studies' settings as defaults (issue 16): input x̂ = 2x - 1, the reference networks, direct
spike-based training, init_scale, replica lineage, and docs/fidelity.md kept true."""
from __future__ import annotations

import re

import pytest
import torch
import yaml
from conftest import REPO

from spkrobust.config.expand import expand_models, shares_weights
from spkrobust.config.schema import default, defaults
from spkrobust.nets.encoding import Encoder
from spkrobust.nets.models import build_model, default_meta, save_model
from spkrobust.training.train import input_stats


def _weights(model):
    return [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def test_default_input_is_2x_minus_1_never_clipped_and_poisson_mean_matches(small_data):
    mean, std = input_stats(small_data, default("input_norm"))
    x = torch.linspace(0, 1, 21).view(1, 1, 1, 21).expand(1, 1, 28, 21).contiguous()
    enc = Encoder("poisson", 4000, mean, std)
    xn = (x - enc.mean) / enc.std
    assert xn.abs().max() <= 1.0 and torch.allclose(xn, 2 * x - 1, atol=1e-6)
    torch.manual_seed(0)
    rate = enc(x).mean(0)  # [1, 1, 28, 21]: 4000 draws per pixel
    p = (2 * x - 1).abs()
    se = (p * (1 - p) / 4000).sqrt().clamp(min=1e-4)
    z = (rate - (2 * x - 1)) / se
    assert z.abs().max() < 5, z.abs().max()  # every pixel within sampling error of 2x - 1
    assert (rate.mean(dim=(0, 1, 2)) - (2 * x[0, 0, 0] - 1)).abs().max() < 0.02
    # the dataset option normalises beyond [-1, 1]: its spike probability would saturate
    dmean, dstd = input_stats(small_data, "dataset")
    assert ((x - dmean[0]) / dstd[0]).abs().max() > 1.5


def test_vgg9_is_the_2019_vgg9_and_vgg11_rathis():
    m9 = build_model(default_meta("ann", "vgg9", 3, 32, 10, [0.5] * 3, [0.5] * 3))
    w9 = _weights(m9)
    assert len(w9) == 9
    assert [w.out_channels for w in w9[:7]] == [64, 64, 128, 128, 256, 256, 256]
    assert [(w.in_features, w.out_features) for w in w9[7:]] == [(4096, 1024), (1024, 10)]
    m11 = build_model(default_meta("ann", "vgg11", 3, 32, 100, [0.5] * 3, [0.5] * 3))
    w11 = _weights(m11)
    assert [w.out_channels for w in w11[:9]] == [64, 128, 256, 256, 512, 512, 512, 512, 512]
    assert [(w.in_features, w.out_features) for w in w11[9:]] == [(8192, 1024), (1024, 1024), (1024, 100)]
    assert m11(torch.rand(2, 3, 32, 32)).shape == (2, 100)


def test_dropout_after_convolutions_no_pool_follows_and_in_the_classifier():
    d = {k: default(k) for k in ("conv_dropout", "dropout")}
    ann = build_model(default_meta("ann", "vgg5", 1, 28, 10, [0.5], [0.5]))
    kinds = [type(m).__name__ + (f"({m.p})" if isinstance(m, torch.nn.Dropout) else "") for m in ann.layers]
    cd, fd = f"Dropout({d['conv_dropout']})", f"Dropout({d['dropout']})"
    assert kinds == ["Conv2d", "ReLU", "AvgPool2d", "Conv2d", "ReLU", cd, "Conv2d", "ReLU", "AvgPool2d",
                     "Flatten", "Linear", "ReLU", fd, "Linear", "ReLU", fd, "Linear"]
    snn = build_model(default_meta("snn", "vgg5", 1, 28, 10, [0.5], [0.5], T=2, backend="torch"))
    assert all(layer.detach_reset for layer in snn.spiking_layers())  # the schema default: true


def test_spike_trained_model_without_from_trains_from_scratch(small_data, tmp_path):
    from spkrobust.training.train import train_snn

    cfg = {"model": {"name": "snn", "base": "snn", "kind": "snn", "arch": "vgg5", "T": 2, "neuron": "lif",
                     "leak": 0.99, "encoder": "poisson", "backend": "torch",
                     "train": {"epochs": 2, "lr": 1e-3, "batch_size": 32, "train_images": 32}},
           "replica": 1, "seed": 0, "device": "cpu"}
    torch.manual_seed(0)
    m = train_snn(small_data, cfg, tmp_path / "s.pt", tmp_path / "s.json")
    assert m["init"] is None and m["meta"]["thresholds"] == [1.0] * 5
    assert m["meta"]["mean"] == [0.5] and m["meta"]["std"] == [0.5]
    # step schedule: milestones 60/80/90 % of 2 epochs = epoch 1: the LR divided once by lr_reduce
    assert m["history"][-1]["lr"] == pytest.approx(1e-3 / defaults("snn_train")["lr_reduce"])
    # the 2019 preset's spike-trained SNN has no parent, so it shares no weights with the ANN
    study = yaml.safe_load((REPO / "workflow/presets/study2019.yaml").read_text())
    assert expand_models(study)["snn_bp"]["from"] is None


def test_fine_tuning_starts_from_converted_thresholds_times_init_scale(small_data, tmp_path):
    from spkrobust.training.convert import run_convert
    from spkrobust.nets.models import load_model
    from spkrobust.training.train import train_snn

    torch.manual_seed(0)
    save_model(build_model(default_meta("ann", "vgg5", 1, 28, 10, [0.5], [0.5])), tmp_path / "a.pt")
    conv = {"model": {"name": "c", "kind": "convert", "T": 2, "calib_T": 3, "neuron": "if", "encoder": "direct"},
            "replica": 1, "seed": 0, "device": "cpu"}
    run_convert(small_data, conv, str(tmp_path / "a.pt"), str(tmp_path / "c.pt"))
    parent = load_model(tmp_path / "c.pt").meta["thresholds"]
    cfg = {"model": {"name": "s", "kind": "snn", "from": "c", "T": 2, "encoder": "direct", "train": {"epochs": 0}},
           "replica": 1, "seed": 0, "device": "cpu"}
    m = train_snn(small_data, cfg, tmp_path / "s.pt", init=tmp_path / "c.pt")
    scale = default("init_scale")
    assert m["meta"]["thresholds"] == pytest.approx([scale * t for t in parent])


def test_shares_weights_follows_the_replica_chain():
    quick = expand_models(yaml.safe_load((REPO / "workflow/presets/quick.yaml").read_text()))
    parent_of = {n: s["from"] for n, s in quick.items()}
    assert shares_weights(parent_of, "ann", 1, "snn_bp-T8", 1)  # the target's ancestor
    assert shares_weights(parent_of, "snn_leak-leak0.9", 1, "snn_bp-T8", 1)  # a sibling (same ANN r1)
    assert shares_weights(parent_of, "snn_bp-T8", 1, "snn_bp-T8", 1)  # white-box
    assert not shares_weights(parent_of, "ann", 2, "snn_bp-T8", 1)  # an independent ANN
    assert not shares_weights(parent_of, "snn_bp-T8", 2, "snn_bp-T8", 1)  # black-box
    study = expand_models(yaml.safe_load((REPO / "workflow/presets/study2019.yaml").read_text()))
    assert not shares_weights({n: s["from"] for n, s in study.items()}, "ann", 1, "snn_bp", 1)


def test_fidelity_doc_names_the_schema_defaults(repo):
    """Every `model.KEY: VALUE`, `train.KEY: VALUE` and `data.KEY: VALUE` in docs/fidelity.md is the
    schema's default."""
    text = (repo / "docs" / "fidelity.md").read_text()
    schema = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())
    data = {k: v["default"] for k, v in schema["properties"]["data"]["properties"].items() if "default" in v}
    train = (defaults("ann_train"), defaults("snn_train"))
    found = re.findall(r"`(model|train|data)\.(\w+): ([^`]+)`", text)
    assert len(found) >= 15, found
    for section, key, value in found:
        value = yaml.safe_load(value)
        if section == "model":
            assert key in schema["$defs"] and "default" in schema["$defs"][key], \
                f"docs/fidelity.md names model.{key}, which has no schema default"
            assert value == default(key), (section, key, value)
        elif section == "train":  # the default of every kind that has the key
            have = [t[key] for t in train if key in t]
            assert have, f"docs/fidelity.md names train.{key}, which has no schema default"
            assert all(v == value for v in have), (section, key, value, have)
        else:
            assert key in data, f"docs/fidelity.md names data.{key}, which has no schema default"
            assert value == data[key], (section, key, value)

"""VGG ANN/SNN construction, encoders, checkpoints."""
from __future__ import annotations


import pytest
import torch

from spkrobust import load_model
from spkrobust.errors import FileProblem
from spkrobust.io import atomic_save
from spkrobust.nets.models import build_model, default_meta, save_model

from helpers.robust import MEAN, STD, snn_meta


@pytest.mark.parametrize("arch,c,size,classes", [("vgg5", 1, 28, 10), ("vgg9", 3, 32, 100), ("vgg11", 3, 32, 100),
                                                  ("vgg11", 1, 28, 10), ("vgg11_tv", 1, 28, 10)])
def test_vgg_ann_and_snn_share_weights_and_shapes(arch, c, size, classes):
    ann = build_model(default_meta("ann", arch, c, size, classes, [0.5] * c, [0.25] * c))
    snn = build_model(default_meta("snn", arch, c, size, classes, [0.5] * c, [0.25] * c, T=2, backend="torch"))
    assert all(not getattr(m, "bias", None) is not None for m in ann.modules() if isinstance(m, torch.nn.Conv2d))
    assert any(isinstance(m, torch.nn.AvgPool2d) for m in ann.modules())
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in ann.modules())
    missing = snn.load_state_dict({k: v for k, v in ann.state_dict().items() if k not in ("mean", "std")}, strict=False)
    assert all(k.startswith("encoder.") for k in missing.missing_keys) and not missing.unexpected_keys
    x = torch.rand(3, c, size, size)
    assert ann(x).shape == (3, classes) and snn(x).shape == (3, classes)


def test_direct_encoder_is_deterministic_poisson_is_not():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28)
    direct = build_model(snn_meta(encoder="direct", thresholds=[0.3] * 5)).eval()
    poisson = build_model(snn_meta(encoder="poisson", thresholds=[0.3] * 5)).eval()
    assert not direct.stochastic and torch.equal(direct(x), direct(x))
    assert poisson.stochastic and not torch.equal(poisson(x), poisson(x))


def test_checkpoint_of_other_architecture_is_a_clear_error(tmp_path):
    ann = build_model(default_meta("ann", "vgg5", 1, 28, 10, MEAN, STD))
    path = tmp_path / "m.pt"
    save_model(ann, path)
    d = torch.load(path, weights_only=True)
    d["meta"]["arch"] = "vgg9"
    atomic_save(d, path)
    with pytest.raises(FileProblem, match="another architecture"):
        load_model(path)



def test_forward_seq_frees_a_weight_layers_output_before_the_next_weight_layer():
    # issue 20: a stale second name for conv 1's output kept it alive through conv 2 (VGG9 and VGG11
    # held 4 W per image-step instead of 3 W); the memory model (nets.memory.infer_bytes) assumes it freed
    import weakref

    snn = build_model(default_meta("snn", "vgg9", 3, 32, 10, MEAN * 3, STD * 3, T=3, backend="fused")).eval()
    convs = [m for m in snn.layers if isinstance(m, torch.nn.Conv2d)]
    outs, alive = [], []
    convs[0].register_forward_hook(lambda m, i, o: outs.append(weakref.ref(o)))
    convs[1].register_forward_pre_hook(lambda m, i: alive.append(outs[-1]() is not None))
    with torch.no_grad():
        snn.forward_seq(torch.rand(2, 3, 32, 32))
    assert alive == [False]

"""ANN-to-SNN conversion (threshold balancing, SpikingJelly's converter)."""
from __future__ import annotations


import pytest
import torch

from spkrobust import load_model
from spkrobust.nets.models import build_model

from helpers.robust import snn_meta


@pytest.mark.parametrize("method", ["threshold", "max"])
def test_conversion_keeps_accuracy(small_data, trained_ann_path, tmp_path, method):
    from spkrobust.training.convert import run_convert

    ann_acc = load_model(trained_ann_path).meta["clean_acc"]
    cfg = {"model": {"name": "snn_conv", "kind": "convert", "from": "ann", "method": method,
                     "scale": 0.8 if method == "threshold" else 1.0, "T": 32, "calib_T": 32, "neuron": "if",
                     "encoder": "direct"}, "replica": 1, "seed": 0, "device": "cpu"}
    m = run_convert(small_data, cfg, str(trained_ann_path), str(tmp_path / "snn.pt"), str(tmp_path / "m.json"))
    th = m["meta"]["thresholds"]
    assert len(th) == 5 and all(t > 0 for t in th)
    assert m["clean_acc"] > ann_acc - 0.10, (m["clean_acc"], ann_acc)
    snn = load_model(tmp_path / "snn.pt")
    assert snn.meta["neuron"] == "if" and snn.meta["T"] == 32


def test_silent_layer_in_threshold_balancing_is_flagged_not_fatal():
    from spkrobust.training.convert import threshold_balance

    torch.manual_seed(0)
    snn = build_model(snn_meta(neuron="if", encoder="direct", T=2, thresholds=None))
    with torch.no_grad():
        snn.layers[3].weight.zero_()  # the second convolution: its spiking layer never gets input
    with pytest.warns(UserWarning, match="spiking layer 1 receives no positive input"):
        th = threshold_balance(snn, torch.rand(8, 1, 28, 28), scale=0.7)
    assert snn.meta["silent_layers"] == [1, 2, 3, 4] and th[0] > 0  # everything after the zeroed conv



@pytest.mark.parametrize("encoder", ["poisson", "direct"])
def test_threshold_balancing_does_not_depend_on_the_cut(encoder):
    # issue 20: calibration runs within the job's bounds (images x steps per pass); the per-layer
    # maxima, and so the thresholds, are those of one pass over all T and the whole batch
    from spkrobust.config.options import Bounds
    from spkrobust.training.convert import calib_cut, threshold_balance

    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    out = {}
    for cut in (Bounds(), Bounds(micro_batch=2, time_chunk=2)):
        torch.manual_seed(0)
        snn = build_model(snn_meta(neuron="if", encoder=encoder, T=24, thresholds=None))
        torch.manual_seed(1)  # the Poisson keys of the calibration passes
        out[cut] = threshold_balance(snn, x, batch_size=4, scale=1.0, bounds=cut)
        if cut.micro_batch:
            assert calib_cut(snn, x, 1, 4, cut) == (2, 2)  # the job's piece: 2 images x 2 steps
    a, b = out.values()
    assert a == b and len(a) == 5 and all(t > 0 for t in a)

"""Training steps in micro-batches and time chunks (issue 20, spkrobust.training.step): unbounded,
a step is exactly the former whole-batch step; cut, the forward pass is bit-identical (same Poisson
spikes, same dropout masks) and the gradient and the weights after an epoch differ only by float
rounding of the regrouped sums."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from spkrobust.config.options import Bounds
from spkrobust.config.schema import defaults
from spkrobust.data.datasets import Prepared
from spkrobust.nets.dropout import Dropout, whole_batch_masks
from spkrobust.nets.models import build_model, default_meta, firing_rates
from spkrobust.training import train
from spkrobust.training.step import train_step

warnings.filterwarnings("ignore", category=FutureWarning)

T, B, LOSS_SCALE = 20, 8, 20.0  # LOSS_SCALE: loss_T sum (logits x T)
# low thresholds so that a randomly initialised VGG5 on 8x8 images spikes in every layer
THRESHOLDS = [0.5, 0.25, 0.2, 0.1, 0.1]
# (micro-batch, time chunk): chunks of 2 steps (8 images x 2 = MIN_ROWS rows), one image at a time
# (its chunks lengthened to MIN_ROWS = 16 steps: 16 + 4), uneven micro-batches (3, 3, 2), both
CUTS = [(None, 2), (1, 2), (3, None), (2, 8)]


def tiny_snn() -> torch.nn.Module:
    torch.manual_seed(0)
    meta = default_meta("snn", "vgg5", 1, 8, 10, [0.5], [0.5], dropout=0.3, conv_dropout=0.2, T=T,
                        neuron="lif", leak=0.95, encoder="poisson", thresholds=THRESHOLDS)
    return build_model(meta).train()


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 1, 8, 8, generator=g), torch.randint(0, 10, (B,), generator=g)


def one_step(bounds: Bounds):
    model = tiny_snn()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = batch()
    torch.manual_seed(1)
    with firing_rates(model) as rates:
        loss, out = train_step(model, opt, x, y, LOSS_SCALE, bounds)
    return loss, out, {k: p.grad.clone() for k, p in model.named_parameters()}, rates


def rel_diff(a: dict, b: dict) -> float:
    """Largest difference of any tensor, relative to that tensor's largest magnitude."""
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max()) for k in b)


def test_unbounded_step_is_the_whole_batch_step():
    """Without a cut the step draws and computes what ``model(x)``, its loss and backward did."""
    x, y = batch()
    weights = []
    for bounded in (False, True):
        model = tiny_snn()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
        torch.manual_seed(1)
        for _ in range(3):
            if bounded:
                train_step(model, opt, x, y, LOSS_SCALE, Bounds())
            else:
                loss = F.cross_entropy(model(x) * LOSS_SCALE, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("micro_batch,time_chunk", CUTS)
def test_cut_step_has_the_same_forward_and_gradient(micro_batch, time_chunk):
    loss0, out0, g0, rates = one_step(Bounds())
    assert min(rates) > 0.05, rates  # every layer spikes: the gradient reaches every weight
    loss, out, g, _ = one_step(Bounds(micro_batch, time_chunk))
    assert torch.equal(out, out0)  # same spikes and masks: the logits bit for bit
    assert loss == pytest.approx(loss0, rel=1e-6)  # the batch's mean loss, summed in micro-batches
    assert rel_diff(g, g0) < 1e-5  # measured 2.5e-6 to 2.9e-6 (float32 sums regrouped)


def test_whole_batch_masks_are_the_unbounded_masks_sliced():
    model, (x, _) = tiny_snn(), batch()
    drops = [m for m in model.modules() if isinstance(m, Dropout) and m.p > 0]
    assert len(drops) == 3
    torch.manual_seed(1)
    with whole_batch_masks(model, B) as select:
        select(0, B)
        model(x)
        whole = [m.mask.clone() for m in drops]
    torch.manual_seed(1)
    model(x)  # outside: SpikingJelly's own draw over the batch, the same numbers
    assert all(torch.equal(m.mask, w) for m, w in zip(drops, whole))
    torch.manual_seed(1)
    with whole_batch_masks(model, B) as select:
        for lo, hi in ((0, 3), (3, 6), (6, 8)):
            select(lo, hi)
            model(x[lo:hi])
            assert all(torch.equal(m.mask, w[lo:hi]) for m, w in zip(drops, whole))
    assert all(m.rows is None and m.whole is None for m in drops)


def _data(n=24):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Prepared("fashion_mnist", x, y, x[:8], y[:8], torch.arange(8), [str(i) for i in range(10)],
                    (1, 8, 8), [0.5], [0.5], "", 0)


def _epoch(bounds: Bounds, tmp_path) -> dict:
    """One epoch of ``train-snn``'s loop (Adam with AMSGrad at the schema's lr; augmentation, loss_T
    sum) over 24 images in batches of 8: 3 optimizer steps."""
    model = tiny_snn()
    opt = torch.optim.Adam(model.parameters(), lr=float(defaults("snn_train")["lr"]), amsgrad=True,
                           weight_decay=5e-4)
    hp = {**defaults("snn_train"), "batch_size": B, "epochs": 1}
    ck = tmp_path / f"{bounds.micro_batch}-{bounds.time_chunk}" / "last.pt"
    train._fit(model, opt, _data(), hp, 0, "cpu", ck, "test", "tiny", bounds)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("micro_batch,time_chunk", [(1, 2), (None, 2)])
def test_an_epoch_gives_the_same_weights_at_any_cut(micro_batch, time_chunk, tmp_path):
    """Measured after 3 steps: 8.1e-7 (micro-batch 1, chunk 2) and 2.0e-6 (chunk 2) of each
    tensor's largest weight; a cut that redrew the dropout masks or the Poisson keys per
    micro-batch: 2e-2."""
    base = _epoch(Bounds(), tmp_path)
    cut = _epoch(Bounds(micro_batch, time_chunk), tmp_path)
    assert rel_diff(cut, base) < 1e-5

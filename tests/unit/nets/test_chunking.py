"""Bounded, cut-invariant execution (issue 20): running T in chunks with the membrane carried and the
images in micro-batches gives the same spikes and logits as one call, bit for bit, on every CPU
backend (fused native kernel, fused torch loops, SpikingJelly's torch nodes), IF and LIF; the
counter-based Poisson stream gives an image the same spikes at any batch size and chunking, at the
rate its intensity asks for."""
from __future__ import annotations

import warnings

import pytest
import torch
from scipy.stats import binomtest

from spkrobust.nets import fused, inference
from spkrobust.nets.encoding import Encoder, image_keys, mix64, poisson_stream, uniforms
from spkrobust.nets.inference import accuracy, bounded_forward
from spkrobust.nets.models import build_model, default_meta, firing_rates
from spkrobust.nets.neurons import SpikingLayer

warnings.filterwarnings("ignore", category=FutureWarning)

T = 8
CHUNKINGS = ((3, 5), (1,) * 8, (2,) * 4, (8,))


@pytest.fixture(params=["fused-native", "fused-torch", "torch"])
def backend(request, monkeypatch):
    if request.param == "fused-native":
        if not fused._load_native():
            pytest.skip(f"native kernel unavailable: {fused.native_status()}")
    elif request.param == "fused-torch":
        monkeypatch.setattr(fused, "_use_native", lambda *t: False)
    return "torch" if request.param == "torch" else "fused"


def _drive(seed=0, shape=(4, 3, 5)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, *shape, generator=g) * 0.6 + 0.3


@pytest.mark.parametrize("neuron,leak", [("if", 1.0), ("lif", 0.9)])
@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_layer_chunks_equal_one_call(backend, neuron, leak, chunks):
    x = _drive()
    layer = SpikingLayer(neuron, leak, 0.7, "linear", backend)
    with torch.no_grad():
        whole = layer(x)
        layer.carry = True
        layer.reset()
        parts, t0 = [], 0
        for n in chunks:
            parts.append(layer(x[t0: t0 + n]))
            t0 += n
    assert 0 < float(whole.mean()) < 1  # the layer spikes, not always
    assert torch.equal(torch.cat(parts), whole)


def test_fused_state_matches_spikingjelly_state():
    """After a chunk, the fused node's carried membrane is SpikingJelly's ``v``, bit for bit."""
    x = _drive(seed=3)
    a = SpikingLayer("lif", 0.9, 0.7, "linear", "torch")
    b = SpikingLayer("lif", 0.9, 0.7, "linear", "fused")
    for m in (a, b):
        m.carry = True
    with torch.no_grad():
        assert torch.equal(a(x[:3]), b(x[:3]))
        assert torch.equal(a.node.v, b.node.v)
        assert torch.equal(a(x[3:]), b(x[3:]))


def _snn(backend, neuron, encoder="poisson", T_=T, seed=0):
    torch.manual_seed(seed)
    meta = default_meta("snn", "vgg5", 3, 16, 10, [0.5] * 3, [0.5] * 3, neuron=neuron,
                        leak=1.0 if neuron == "if" else 0.9, T=T_, backend=backend, encoder=encoder,
                        thresholds=[0.25, 0.2, 0.15, 0.1, 0.1])
    return build_model(meta).eval()


@pytest.mark.parametrize("neuron", ["if", "lif"])
def test_network_chunks_and_micro_batches_equal_one_call(backend, neuron, monkeypatch):
    """Chunks of 1, 2, 3, 5 steps and micro-batches of 1-3 images, really that small (``MIN_ROWS``
    off: at these small layer shapes the BLAS gives every row the same floats at any row count)."""
    monkeypatch.setattr(inference, "MIN_ROWS", 1)
    model = _snn(backend, neuron)
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), poisson_stream(model, seed=11):
        with firing_rates(model) as rates:
            whole = model(x)
        assert all(0 < r < 1 for r in rates), rates  # every layer spikes: the carried state matters
        for tc, mb in ((3, None), (1, None), (2, 1), (5, 2), (None, 3), (8, 5)):
            assert torch.equal(model(x, time_chunk=tc, micro_batch=mb), whole), (tc, mb)
        # chunks of unequal length: 3 + 5 steps through forward_seq by hand
        keys = model.encoder.keys(len(x))
        h = torch.cat([model.forward_seq(x, t0=0, steps=3, keys=keys), model.forward_seq(x, t0=3, steps=5, keys=keys)])
        from spkrobust.nets.inference import time_sum
        assert torch.equal(time_sum(h) / T, whole)


def test_classifier_gives_a_row_the_same_floats_at_any_row_count():
    """The narrow classifier layer (1024 -> 10) of a CIFAR VGG5: a row's logits from a call of 1 to 39
    rows equal those of a 40-row call (``nets.models.Linear``; MKL's sgemm behind ``F.linear`` picked
    another kernel below 10 rows on an AMD EPYC, so a short last time chunk changed the logits)."""
    torch.manual_seed(0)
    model = build_model(default_meta("snn", "vgg5", 3, 32, 10, [0.5] * 3, [0.5] * 3, neuron="if", T=4,
                                     encoder="poisson", thresholds=[0.5] * 5)).eval()
    head = [m for m in model.layers if isinstance(m, torch.nn.Linear)][-1]
    assert head.out_features == 10
    x = (torch.rand(40, head.in_features, generator=torch.Generator().manual_seed(3)) > 0.7).float()
    with torch.no_grad():
        full = head(x)
        assert [n for n in range(1, 40) if not torch.equal(head(x[:n]), full[:n])] == []


def test_chunks_equal_one_call_at_cifar_vgg5_shapes():
    """VGG5 on 32x32x3 (the shapes of config.yaml's CIFAR-10 targets), 24 steps, with the default
    minimum of rows per weight-layer call: chunks of 2 steps of 1 image (lengthened to 16) and of 5
    steps of 2 images give the logits of one call, bit for bit."""
    torch.manual_seed(0)
    meta = default_meta("snn", "vgg5", 3, 32, 10, [0.5] * 3, [0.5] * 3, neuron="if", T=24, backend="fused",
                        encoder="poisson", thresholds=[0.5] * 5)
    model = build_model(meta).eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), poisson_stream(model, seed=2):
        whole = model(x)
        for tc, mb in ((2, 1), (5, 2), (7, None)):
            assert torch.equal(model(x, time_chunk=tc, micro_batch=mb), whole), (tc, mb)


@pytest.mark.parametrize("neuron,leak", [("if", 1.0), ("lif", 0.9)])
@pytest.mark.parametrize("detach", [False, True])
def test_layer_bptt_over_chunks_equals_one_call(backend, neuron, leak, detach):
    """Gradients flow through the carried membrane: BPTT over chunks of 3 + 5 steps gives the input
    gradient of one call (the same reverse recursion, regrouped: float rounding only)."""
    x = _drive(seed=2).requires_grad_()
    up = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    layer = SpikingLayer(neuron, leak, 0.7, "linear", backend, detach_reset=detach)
    whole = layer(x)
    (g_whole,) = torch.autograd.grad((whole * up).sum(), x)
    layer.carry = True
    layer.reset()
    parts = torch.cat([layer(x[:3]), layer(x[3:])])
    (g_parts,) = torch.autograd.grad((parts * up).sum(), x)
    assert torch.equal(parts, whole)
    assert g_whole[:3].abs().sum() > 0
    torch.testing.assert_close(g_parts, g_whole, rtol=1e-6, atol=1e-6)


def test_accuracy_does_not_depend_on_batch_or_bounds():
    model = _snn("fused", "if")
    xu = (torch.rand(7, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
    logits = {}
    for bs, mb, tc in ((7, None, None), (3, 1, 2), (2, 2, 3)):
        torch.manual_seed(5)
        acc = accuracy(model, xu, torch.arange(7) % 10, batch_size=bs, micro_batch=mb, time_chunk=tc)
        logits[(bs, mb, tc)] = acc
    assert len(set(logits.values())) == 1, logits
    x = xu.float() / 255
    with poisson_stream(model, 9, torch.arange(7)), torch.no_grad():
        full = bounded_forward(model, x)
    with torch.no_grad():  # the same images as two calls, each keyed with its own positions
        with poisson_stream(model, 9, torch.arange(0, 4)):
            a = bounded_forward(model, x[:4], micro_batch=3, time_chunk=5)
        with poisson_stream(model, 9, torch.arange(4, 7)):
            b = bounded_forward(model, x[4:], time_chunk=1)
    assert torch.equal(torch.cat([a, b]), full)


# ---- the counter-based Poisson stream ----------------------------------------------------------

def _splitmix_ref(z: int) -> int:
    m = (1 << 64) - 1
    z &= m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_mix64_is_splitmix64():
    """The int64 torch ops (wrapping products, masked shifts) equal unsigned 64-bit arithmetic."""
    vals = [0, 1, 2, 12345, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 0x9E3779B97F4A7C15, 0xDEADBEEFCAFEBABE]
    signed = [v - (1 << 64) if v >= 1 << 63 else v for v in vals]
    got = mix64(torch.tensor(signed, dtype=torch.int64)).tolist()
    assert [g & ((1 << 64) - 1) for g in got] == [_splitmix_ref(v) for v in vals]


def test_uniforms_do_not_depend_on_the_cut():
    keys = image_keys(3, torch.tensor([5, 9, 2]), repeat=1)
    whole = uniforms(keys, 0, 12, 7)
    assert whole.min() >= 0 and whole.max() < 1
    assert torch.equal(torch.cat([uniforms(keys, 0, 5, 7), uniforms(keys, 5, 7, 7)]), whole)
    assert torch.equal(uniforms(keys[1:2], 0, 12, 7), whole[:, 1:2])
    assert not torch.equal(uniforms(image_keys(3, torch.tensor([5]), 2), 0, 12, 7), whole[:, :1])  # repeat
    assert not torch.equal(uniforms(image_keys(4, torch.tensor([5]), 1), 0, 12, 7), whole[:, :1])  # seed


@pytest.mark.parametrize("kind", ["poisson", "poisson_unsigned"])
def test_spikes_identical_across_batch_splits_and_chunks(kind):
    enc = Encoder(kind, 10, [0.5], [0.5])
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    idx = torch.tensor([40, 3, 17, 8, 99, 0])
    with poisson_stream(enc, 21, idx, repeat=2):
        whole = enc(x)
    parts = []
    for sl in (slice(0, 1), slice(1, 4), slice(4, 6)):
        with poisson_stream(enc, 21, idx[sl], repeat=2):
            keys = enc.keys(len(x[sl]))
            parts.append(torch.cat([enc(x[sl], 0, 3, keys), enc(x[sl], 3, 6, keys), enc(x[sl], 9, 1, keys)]))
    assert torch.equal(torch.cat(parts, dim=1), whole)


def test_default_stream_follows_the_global_seed():
    enc = Encoder("poisson", 16, [0.5], [0.5])
    x = torch.full((2, 1, 3, 3), 0.7)
    torch.manual_seed(1)
    a, b = enc(x), enc(x)
    torch.manual_seed(1)
    assert torch.equal(enc(x), a) and not torch.equal(a, b)  # seeded; successive passes draw afresh


def test_spike_rate_matches_intensity():
    """Per intensity, the number of spikes over images x steps x pixels is Binomial(n, p): a two-sided
    binomial test at p < 1e-6 (a correct stream fails it once in a million runs); 0 and 1 are exact."""
    steps, per = 500, 64
    levels = torch.tensor([0.0, 0.03, 0.25, 0.5, 0.61, 0.9, 1.0])
    x = levels.view(-1, 1, 1, 1).expand(len(levels), 1, 8, 8).contiguous()
    for kind, prob, sign in (("poisson_unsigned", levels, torch.ones_like(levels)),
                             ("poisson", (2 * levels - 1).abs(), torch.sign(2 * levels - 1))):
        enc = Encoder(kind, steps, [0.5], [0.5])
        with poisson_stream(enc, 123):
            s = enc(x)  # [steps, levels, 1, 8, 8]
        for i, (p, sg) in enumerate(zip(prob.tolist(), sign.tolist())):
            si = s[:, i]
            assert set(si.unique().tolist()) <= {0.0, sg}, (kind, p)
            k, n = int(si.abs().sum()), steps * per
            if p in (0.0, 1.0):
                assert k == round(p * n), (kind, p, k)
            else:
                assert binomtest(k, n, p).pvalue > 1e-6, (kind, p, k / n)


# ---- budget invariance of the stages --------------------------------------------------------------

def test_clean_and_evaluate_records_do_not_depend_on_the_cut(tmp_path):
    """``clean`` and ``evaluate`` on a Poisson VGG5 SNN write the same records (accuracies, per-image
    outcomes, firing rates) with micro-batches of 1 image and chunks of 2 steps as unbounded, and at
    another evaluation batch size; only the timing differs."""
    import json

    from spkrobust.cli import main

    from helpers.robust import MEAN, STD, snn as make_snn
    from spkrobust.data.datasets import prepare
    from spkrobust.io import atomic_save
    from spkrobust.nets.models import save_model

    d = str(tmp_path / "data.pt")  # 6 real Fashion-MNIST test images
    atomic_save(prepare("fashion_mnist", "data", train_size=64, test_size=6, calib_size=8, seed=0), d)
    snn, ann = str(tmp_path / "snn.pt"), str(tmp_path / "ann.pt")  # T = 18: 1 image in chunks of 16 + 2 steps
    save_model(make_snn(seed=1, T=18), snn, name="snn", replica=1, dataset="fashion_mnist", seed=1)
    torch.manual_seed(0)
    save_model(build_model(default_meta("ann", "vgg5", 1, 28, 10, MEAN, STD)).eval(), ann, name="ann", replica=1,
               dataset="fashion_mnist", seed=0)

    def cfg(batch, **kw):
        return json.dumps({"seed": 0, "device": "cpu", "dataset": "fashion_mnist",
                           "eval": {"repeats": 2, "batch_size": batch}, **kw})

    adv = tmp_path / "adv.pt"
    assert main(["craft", "--data", d, "--model", ann, "--attack-cfg", '{"type": "fgsm"}',
                 "--eps", "8/255", "--cfg", cfg(6, source="ann", replica=1, attack="fgsm"), "--out", str(adv)]) == 0
    records = {}
    for label, batch, cut in (("free", 6, []), ("cut", 6, ["--micro-batch", "1", "--time-chunk", "2"]),
                              ("batch4", 4, ["--time-chunk", "3"])):
        c, e = tmp_path / f"clean_{label}.json", tmp_path / f"eval_{label}.json"
        assert main(["clean", "--data", d, "--model", snn, *cut, "--cfg", cfg(batch, model="snn", replica=1),
                     "--out", str(c)]) == 0
        assert main(["evaluate", "--data", d, "--adv", str(adv), "--target", snn, "--clean", str(c), *cut,
                     "--cfg", cfg(batch, source="ann", source_replica=1, attack="fgsm", target="snn",
                                  target_replica=1), "--out", str(e)]) == 0
        records[label] = [{k: v for k, v in json.loads(p.read_text()).items() if k != "time_s"} for p in (c, e)]
    clean = records["free"][0]
    assert clean["stochastic"] and clean["repeat_check"]["differs"] and all(r > 0 for r in clean["firing_rates"])
    assert records["cut"] == records["free"]
    assert records["batch4"] == records["free"]


def test_bad_bounds_are_one_line_errors(tmp_path, capsys):
    from spkrobust.cli import main

    for flag in ("--micro-batch", "--time-chunk"):
        assert main(["clean", "--data", "x.pt", "--model", "m.pt", flag, "0", "--cfg", "{}",
                     "--out", str(tmp_path / "c.json")]) == 2
        assert f"{flag} must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("detach", [False, True])
def test_checkpointed_bptt_equals_one_call_and_keeps_less(backend, detach, monkeypatch):
    """Time-chunked BPTT with recomputation: the same logits, input and weight gradients as one call
    (float rounding only), with fewer tensors saved for backward."""
    monkeypatch.setattr(inference, "MIN_ROWS", 1)
    import torch.nn.functional as F

    model = _snn(backend, "lif")
    for m in model.spiking_layers():
        m.detach_reset = m.node.detach_reset = detach
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(8)).requires_grad_()
    y = torch.tensor([3, 5])
    w = model.layers[0].weight
    res = {}
    for tc in (None, 2):
        saved = []
        with poisson_stream(model, seed=6), torch.autograd.graph.saved_tensors_hooks(
                lambda t: saved.append(t.numel()) or t, lambda t: t):
            out = model(x, time_chunk=tc)
        gx, gw = torch.autograd.grad(F.cross_entropy(out, y), (x, w))
        res[tc] = (out.detach(), gx, gw, sum(saved))
    (o1, gx1, gw1, s1), (o2, gx2, gw2, s2) = res[None], res[2]
    assert torch.equal(o1, o2) and gx1.abs().sum() > 0 and gw1.abs().sum() > 0
    torch.testing.assert_close(gx2, gx1, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gw2, gw1, rtol=1e-5, atol=1e-7)
    assert s2 < s1 / 2, (s1, s2)  # checkpointing keeps the chunk boundaries, not the whole graph

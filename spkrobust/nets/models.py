"""VGG5/9/11 as in the studies, as ANN (``nn.ReLU``) and SNN (SpikingJelly multistep neurons).

Both share one layer list (bias-free convolutions, average pooling, dropout ``conv_dropout`` after
every convolution that no pool follows and ``dropout`` in the classifier, as in Rathi et al.'s
``vgg_spiking.py``; an SNN draws each dropout mask once per forward pass, fixed over T, or once per batch run in
micro-batches: :mod:`spkrobust.nets.dropout`), so
an ANN's ``state_dict`` loads into the SNN built from the same metadata. Inputs are pixels in
[0, 1]; normalisation is the model's first step (ANN) or part of its encoder (SNN), so attacks and
epsilons live in pixel space.

The SNN runs every convolution/linear layer once on ``[T*B, ...]`` (the time steps folded into the
batch) and the neurons on ``[T, B, ...]``; its output is the last layer's output summed over T step
by step in time order (:func:`time_sum`) and divided by T. Neuron state is reset once per forward
pass (at step 0) and carried from call to call otherwise, so ``SNN.forward(x, time_chunk=k,
micro_batch=m)`` runs T in chunks of k steps and the images m at a time
(:mod:`spkrobust.nets.inference`) with the same output as one call, bit for bit wherever the
weight layers give a row the same floats at any row count (see there; tests/test_chunking.py).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn

from spkrobust.nets.arch import ARCHS, layer_plan as _layer_plan  # noqa: F401  (ARCHS: re-exported)
from spkrobust.nets.dropout import Dropout as SeqDropout
from spkrobust.nets.encoding import Encoder
from spkrobust.nets.bounded import bounded_logits
from spkrobust.nets.inference import bounded_forward, time_sum
from spkrobust.errors import FileProblem, UserError
from spkrobust.io import atomic_save, safe_load
from spkrobust.nets.neurons import SpikingLayer, resolve_backend
from spkrobust.config.schema import default
from spkrobust.config.vocab import ENCODERS, MODEL_FORMAT, NEURONS, SNN_KEYS, SURROGATES

FORMAT = MODEL_FORMAT


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same ``state_dict``) computed as ``x @ Wᵀ`` with ``Wᵀ`` made
    contiguous, so that each row gets the same floats at any row count.

    ``F.linear`` hands MKL's sgemm the weight transposed; for a narrow output (the classifier's 10
    classes) sgemm then picks its kernel by the row count: measured on an AMD EPYC (AVX2, MKL 2024.2,
    ``MKL_CBWR=AVX2,STRICT``), rows of a 1 to 9-row call of a 1024 -> 10 layer differed from the same
    rows of a 120-row call, while ``x @ Wᵀ`` (contiguous) agreed at every row count from 1 to 119; outputs
    of 32 to 1024 agree from 4 rows on either way (``spkrobust.nets.inference.MIN_ROWS``). A time
    chunk or micro-batch of few rows must give the logits of one call (issue 20). Only a narrow layer
    (fewer than :data:`NARROW` outputs) takes this path: copying a wide weight on every call made a
    VGG5 classifier's forward + backward 1.8x slower (batch 64, 1 thread), and wide layers need no copy."""

    NARROW = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.out_features >= self.NARROW:
            return super().forward(x)
        y = x @ self.weight.t().contiguous()
        return y if self.bias is None else y + self.bias


def _weight_modules(plan, act_factory, dropout: float, conv_dropout: float, seq_dropout: bool):
    mods = []
    for kind, a in plan:
        if kind == "conv":
            mods.append(nn.Conv2d(a[0], a[1], 3, padding=1, bias=False))
        elif kind == "pool":
            mods.append(nn.AvgPool2d(2))
        elif kind == "flatten":
            mods.append(nn.Flatten())
        elif kind == "linear":
            mods.append(Linear(a[0], a[1], bias=False))
        elif kind == "act":
            mods.append(act_factory())
        elif kind in ("dropout", "conv_dropout"):
            p = dropout if kind == "dropout" else conv_dropout
            mods.append(SeqDropout(p) if seq_dropout else nn.Dropout(p))
    return nn.ModuleList(mods)


def default_meta(kind: str, arch: str, in_channels: int, image_size: int, num_classes: int,
                 mean: list[float], std: list[float], dropout: float | None = None,
                 conv_dropout: float | None = None, **snn) -> dict:
    """A model's meta; what ``snn``, ``dropout`` and ``conv_dropout`` leave out takes the config
    schema's default."""
    dropout = default("dropout") if dropout is None else dropout
    conv_dropout = default("conv_dropout") if conv_dropout is None else conv_dropout
    meta = {"kind": kind, "arch": arch, "in_channels": int(in_channels), "image_size": int(image_size),
            "num_classes": int(num_classes), "mean": list(map(float, mean)), "std": list(map(float, std)),
            "dropout": float(dropout), "conv_dropout": float(conv_dropout)}
    if kind == "snn":
        meta.update({k: default(k) for k in SNN_KEYS})
        meta["thresholds"] = None
        meta.update(snn)
        if meta["neuron"] == "if":
            meta["leak"] = 1.0
    return meta


class ANN(nn.Module):
    def __init__(self, meta: dict):
        super().__init__()
        self.meta = meta
        self.plan = _layer_plan(meta["arch"], meta["in_channels"], meta["image_size"], meta["num_classes"])
        self.register_buffer("mean", torch.tensor(meta["mean"], dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(meta["std"], dtype=torch.float32).view(1, -1, 1, 1))
        self.layers = _weight_modules(self.plan, nn.ReLU, meta["dropout"], meta.get("conv_dropout", 0.0),
                                      seq_dropout=False)

    stochastic = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        for m in self.layers:
            x = m(x)
        return x

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Inputs to every ReLU (used for data-based normalisation checks)."""
        out = []
        x = (x - self.mean) / self.std
        for m in self.layers:
            if isinstance(m, nn.ReLU):
                out.append(x)
            x = m(x)
        return out


class SNN(nn.Module):
    def __init__(self, meta: dict, device: torch.device | str | None = None):
        super().__init__()
        for key, allowed in (("neuron", NEURONS), ("encoder", ENCODERS), ("surrogate", SURROGATES)):
            if meta[key] not in allowed:
                raise UserError(f"unknown {key} {meta[key]!r}; allowed: {', '.join(allowed)}")
        if int(meta["T"]) < 1:
            raise UserError(f"T must be >= 1, got {meta['T']}")
        if not 0.0 < float(meta["leak"]) <= 1.0:
            raise UserError(f"leak must be in (0, 1], got {meta['leak']}")
        self.meta = meta
        self.T = int(meta["T"])
        self.plan = _layer_plan(meta["arch"], meta["in_channels"], meta["image_size"], meta["num_classes"])
        n_act = sum(1 for k, _ in self.plan if k == "act")
        th = meta.get("thresholds") or [1.0] * n_act
        if len(th) != n_act:
            raise UserError(f"{meta['arch']} has {n_act} spiking layers but {len(th)} thresholds were given")
        self.meta["thresholds"] = [float(t) for t in th]
        self.backend = resolve_backend(meta.get("backend", "auto"), device)
        it = iter(self.meta["thresholds"])
        self.encoder = Encoder(meta["encoder"], self.T, meta["mean"], meta["std"])
        # checkpoints written before conv_dropout / detach_reset existed had neither
        self.detach_reset = bool(meta.get("detach_reset", False))
        self.layers = _weight_modules(
            self.plan, lambda: SpikingLayer(meta["neuron"], float(meta["leak"]), next(it), meta["surrogate"],
                                            self.backend, detach_reset=self.detach_reset),
            meta["dropout"], meta.get("conv_dropout", 0.0), seq_dropout=True)
        for m in self.spiking_layers():
            m.carry = True  # the membrane is carried across time chunks; forward_seq resets at step 0
        self.bounds: tuple | None = None  # (micro_batch, time_chunk) of every call: spkrobust.nets.bounded.set_bounds

    @property
    def stochastic(self) -> bool:
        return self.encoder.stochastic

    def spiking_layers(self) -> list[SpikingLayer]:
        return [m for m in self.layers if isinstance(m, SpikingLayer)]

    def set_thresholds(self, thresholds: list[float]):
        """Rebuild the neurons with new per-layer thresholds (keeps weights)."""
        self.meta["thresholds"] = [float(t) for t in thresholds]
        it = iter(self.meta["thresholds"])
        for i, m in enumerate(self.layers):
            if isinstance(m, SpikingLayer):
                self.layers[i] = SpikingLayer(m.neuron_type, m.leak, next(it), m.surrogate_name, m.backend,
                                              detach_reset=m.detach_reset)
                self.layers[i].estimator = m.estimator
                self.layers[i].carry = True
        return self

    def forward_seq(self, x: torch.Tensor, upto: int | None = None, t0: int = 0, steps: int | None = None,
                    keys: torch.Tensor | None = None) -> torch.Tensor:
        """Run the network on pixels ``x`` over the steps ``[t0, t0 + steps)`` (default: all T);
        returns the ``[steps, B, ...]`` output of layer ``upto`` (all layers when None) *before* it
        is applied when ``upto`` is a SpikingLayer index. At ``t0 == 0`` the state is reset first;
        otherwise the neurons continue from the previous call (the chunk before). ``keys``: the
        encoder's per-image keys of this forward pass (:meth:`Encoder.keys`; None: drawn now)."""
        if t0 == 0:
            self.reset()
        T, B = (self.T - int(t0) if steps is None else int(steps)), x.shape[0]
        h = self.encoder(x, t0, T, keys)  # [T, B, C, H, W]
        for i, m in enumerate(self.layers):
            if upto is not None and i == upto:
                return h
            if isinstance(m, SpikingLayer) or m.__class__.__name__ == "Dropout":
                h = m(h)
            else:
                h = m(h.flatten(0, 1))  # no second name: the layer's input is freed at the next layer
                h = h.view(T, B, *h.shape[1:])
        return h

    def reset(self) -> None:
        """Reset all state (neuron potentials in :class:`SpikingLayer`, dropout masks)."""
        for m in self.layers:
            if hasattr(m, "reset"):
                m.reset()

    def forward(self, x: torch.Tensor, time_chunk: int | None = None, micro_batch: int | None = None) -> torch.Tensor:
        """Logits (the output's mean over T) of pixels ``x``; ``time_chunk`` / ``micro_batch``
        bound the memory (:func:`spkrobust.nets.inference.bounded_forward`) without changing them;
        without them, the model's ``bounds`` (:func:`spkrobust.nets.bounded.set_bounds`) do, with
        checkpointed micro-batches and chunks under autograd."""
        if time_chunk is None and micro_batch is None:
            if self.bounds is not None:  # set_bounds: the attack stages' cut, under autograd too
                return bounded_logits(self, x, *self.bounds)
            return time_sum(self.forward_seq(x)) / self.T
        return bounded_forward(self, x, micro_batch=micro_batch, time_chunk=time_chunk)


@contextmanager
def firing_rates(model: nn.Module):
    """While active, counts the spikes of every spiking layer of ``model`` (an SNN; an ANN has none);
    yields a list that holds, on exit, each layer's mean firing rate in layer order (spikes per
    neuron per time step over every forward pass made meanwhile; 0.0 = a silent layer)."""
    layers = model.spiking_layers() if isinstance(model, SNN) else []
    sums, counts = [0.0] * len(layers), [0] * len(layers)

    def hook(i):
        def count(_module, _inputs, out):
            # exact spike counts without a float64 copy of the chunk (sum(dtype=float64) made one:
            # +600 MB in a T = 2000 conversion's accuracy pass)
            sums[i] += int(torch.count_nonzero(out.detach()))
            counts[i] += out.numel()
        return count

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(layers)]
    rates: list[float] = []
    try:
        yield rates
    finally:
        for h in handles:
            h.remove()
        rates.extend(s / c if c else 0.0 for s, c in zip(sums, counts))


def build_model(meta: dict, device: torch.device | str | None = None) -> nn.Module:
    meta = copy.deepcopy(meta)
    if meta.get("kind") == "ann":
        return ANN(meta)
    if meta.get("kind") == "snn":
        return SNN(meta, device=device)
    raise UserError(f"unknown model kind {meta.get('kind')!r}; allowed: ann, snn")


def save_model(model: nn.Module, path: str | Path, **extra_meta) -> None:
    meta = copy.deepcopy(model.meta)
    meta.update(extra_meta)
    model.meta.update(extra_meta)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save({"format": FORMAT, "meta": meta, "state_dict": sd}, path)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Load any saved spkrobust ANN or SNN.

    Returns a module in ``eval()`` mode taking pixels in [0, 1] (``[B, C, H, W]``) and returning
    logits; metadata on ``model.meta``. SNNs give input gradients in this mode.
    """
    d = safe_load(path, expect_format=FORMAT, what="model checkpoint")
    meta, sd = d.get("meta"), d.get("state_dict")
    if not isinstance(meta, dict) or not isinstance(sd, dict):
        raise FileProblem(f"{path}: model checkpoint lacks meta/state_dict; retrain it")
    try:
        model = build_model(meta, device=device)
    except UserError as e:
        raise FileProblem(f"{path}: cannot rebuild the model ({e})") from None
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise FileProblem(f"{path}: weights do not fit a {meta.get('kind')} {meta.get('arch')} "
                          f"({first[:200]}); the checkpoint is of another architecture or corrupt") from None
    return model.to(device).eval()

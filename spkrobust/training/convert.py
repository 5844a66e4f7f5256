"""ANN-to-SNN conversion onto :class:`spkrobust.nets.models.SNN`.

* ``threshold`` — the studies' threshold balancing (Rathi et al. ``snn.py:48-104``): layer by layer,
  with the thresholds of the layers before it already set, the largest input current a spiking
  layer receives over ``max(calib_T, T)`` steps on the calibration images (augmented as training
  images when ``calib_augment``; with the SNN's own encoder, e.g. Poisson) becomes its threshold;
  finally every threshold is multiplied by ``scale`` (1.0: the authors' converted SNN; their 0.7
  is the start of spike-based training, applied by ``train`` as ``init_scale``).
* ``max`` / ``99.9%`` — SpikingJelly's ``ann2snn.Converter`` (``mode='Max'`` / ``'99.9%'``). Its
  graph scales each IF layer's input by 1/s and output by s; that is mapped onto our SNN by weight
  normalisation (``W_l ← W_l · s_{l-1} / s_l``, thresholds 1), which leaves the spike trains
  unchanged; ``scale`` then multiplies the thresholds as above.
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn as nn

from spkrobust.data.datasets import Prepared, augment, load_prepared, to_float
from spkrobust.errors import UserError
from spkrobust.provenance import environment, package_versions
from spkrobust.nets.models import SNN, build_model, firing_rates, load_model, save_model
from spkrobust.nets.neurons import SpikingLayer
from spkrobust.config.options import Bounds, read_cfg, resolve_device
from spkrobust.nets.heap import release_allocator
from spkrobust.nets.inference import accuracy
from spkrobust.training.common import seed_everything, snn_meta_from
from spkrobust.config.schema import default
from spkrobust.config.vocab import METHODS
from spkrobust.training.records import ModelMetrics, write_metrics



def _weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.layers if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def threshold_balance(snn: SNN, calib_x: torch.Tensor, batch_size: int = 64, scale: float = 1.0,
                      steps: int | None = None, bounds: Bounds | None = None) -> list[float]:
    """Set the SNN's thresholds by threshold balancing on ``calib_x`` (float pixels) over ``steps``
    time steps (None: the SNN's T) and return them. ``bounds``: the job's inference cut (the plan's
    ``micro_batch`` x ``time_chunk`` piece); calibration passes stay within it (:func:`calib_cut`)."""
    T = snn.T
    if steps is not None:
        snn.T = snn.encoder.T = int(steps)
    try:
        return _balance(snn, calib_x, batch_size, scale, bounds or Bounds())
    finally:
        snn.T = snn.encoder.T = T


CALIB_MEMORY = 2 * 1024 ** 3  # bytes the [T, B, ...] currents of one calibration pass may take without bounds


def calib_cut(snn: SNN, calib_x: torch.Tensor, first: int, batch_size: int, bounds: Bounds) -> tuple[int, int]:
    """``(images, steps)`` per calibration pass. With the job's bounds: at most ``micro_batch``
    images and the piece's image-steps (a pass up to a layer runs a prefix of the ops whose live sets
    bound the inference piece: :func:`spkrobust.nets.memory.infer_bytes`); without: ``batch_size``
    images over all T, fewer images when the first spiking layer's current (the widest tensor of
    these VGGs) over T would exceed :data:`CALIB_MEMORY`. The per-layer maximum does not depend on
    the cut: the membrane is carried across the steps and the Poisson keys are drawn once per layer
    for the whole calibration set (one key per image)."""
    T = int(snn.T)
    n = max(1, min(batch_size, len(calib_x)))
    if bounds.micro_batch or bounds.time_chunk:
        piece = int(bounds.micro_batch or n) * int(bounds.time_chunk or T)  # image-steps of the job's piece
        b = min(n, int(bounds.micro_batch or n))
        return b, max(1, min(T, piece // b))
    with torch.random.fork_rng():  # the probe draws no random numbers of the calibration passes
        snn.reset()
        per_image = snn.forward_seq(calib_x[:1], t0=0, steps=1, upto=first).numel() * 4 * T
    return max(1, min(n, CALIB_MEMORY // (4 * per_image))), T


def _balance(snn: SNN, calib_x: torch.Tensor, batch_size: int, scale: float, bounds: Bounds) -> list[float]:
    snn.eval()
    idx = [i for i, m in enumerate(snn.layers) if isinstance(m, SpikingLayer)]
    thresholds = list(snn.meta["thresholds"])
    steps = snn.T
    if idx and len(calib_x):
        batch_size, steps = calib_cut(snn, calib_x, idx[0], batch_size, bounds)
        if steps < snn.T or int(bounds.time_chunk or snn.T) < snn.T:  # the job's passes are cut in T:
            release_allocator()  # their peak is then the live pieces' (spkrobust.nets.inference)
    for k, li in enumerate(idx):
        vmax = 0.0
        keys = snn.encoder.keys(len(calib_x), calib_x.device)  # one per image: the cut changes no spike
        for i in range(0, len(calib_x), batch_size):
            xb, kb = calib_x[i: i + batch_size], None if keys is None else keys[i: i + batch_size]
            for t0 in range(0, snn.T, steps):  # forward_seq resets at t0 = 0 and carries after
                current = snn.forward_seq(xb, upto=li, t0=t0, steps=min(steps, snn.T - t0), keys=kb)
                vmax = max(vmax, float(current.max()))
        if vmax <= 0:  # a silent layer (e.g. a barely trained ANN at small T): keep it, flag it
            warnings.warn(f"threshold balancing: spiking layer {k} receives no positive input on the "
                          f"calibration set at T={snn.T}; its threshold stays {thresholds[k]:.4g}")
            snn.meta.setdefault("silent_layers", []).append(k)
            continue
        thresholds[k] = vmax
        snn.set_thresholds(thresholds)
    thresholds = [t * scale for t in thresholds]
    snn.set_thresholds(thresholds)
    return thresholds


def spikingjelly_scales(ann: nn.Module, calib_x: torch.Tensor, mode: str, batch_size: int = 64) -> list[float]:
    """Per-ReLU scales ``s_l`` found by SpikingJelly's ``ann2snn.Converter`` (in layer order)."""
    import copy

    from spikingjelly.activation_based import ann2snn

    loader = [(calib_x[i: i + batch_size], torch.zeros(len(calib_x[i: i + batch_size])))
              for i in range(0, len(calib_x), batch_size)]
    sj_mode = {"max": "Max", "99.9%": "99.9%"}[mode]
    graph = ann2snn.Converter(loader, mode=sj_mode)(copy.deepcopy(ann).eval())
    tailor = getattr(graph, "snn tailor")
    groups = list(tailor.children())  # one (VoltageScaler(1/s), IFNode, VoltageScaler(s)) per ReLU, in order
    return [float(list(g.children())[2].scale) for g in groups]


def convert(ann: nn.Module, data: Prepared, spec: dict, seed: int, device: torch.device,
            bounds: Bounds | None = None) -> SNN:
    method = spec.get("method", default("method"))
    if method not in METHODS:
        raise UserError(f"unknown conversion method {method!r}; allowed: {', '.join(METHODS)}")
    scale = float(spec.get("scale", default("scale")))
    meta = snn_meta_from({"neuron": default("neuron", kind="convert"), **spec}, ann.meta)
    meta["thresholds"] = None
    snn = build_model(meta, device=device)
    sd = {k: v for k, v in ann.state_dict().items() if k not in ("mean", "std")}
    snn.load_state_dict(sd, strict=False)
    snn = snn.to(device)
    seed_everything(seed)
    calib = to_float(data.calib_x())
    if spec.get("calib_augment", default("calib_augment")):
        calib = augment(calib, data.dataset)
    calib = calib.to(device)
    if method == "threshold":
        threshold_balance(snn, calib, scale=scale, steps=max(int(spec.get("calib_T", default("calib_T"))), snn.T),
                          bounds=bounds)
    else:
        scales = spikingjelly_scales(ann.to(device), calib, method)
        layers = _weight_layers(snn)
        prev = 1.0
        with torch.no_grad():
            for w, s in zip(layers, scales + [1.0]):
                w.weight.mul_(prev / s)
                prev = s
        snn.set_thresholds([scale] * len(scales))
    return snn


def run_convert(data: Prepared, cfg: dict, ann_path: str, out: str, metrics_out: str | None = None,
                bounds: Bounds | None = None) -> dict:
    """Convert, then measure the SNN's and the ANN's test accuracy (the SNN's within ``bounds``:
    micro-batches and time chunks that fit the job's memory, with the same result)."""
    t0 = time.time()
    bounds = bounds or Bounds()
    spec, seed = cfg["model"], int(cfg["seed"])
    device = resolve_device(cfg["device"])
    ann = load_model(ann_path, device=device)
    if ann.meta["kind"] != "ann":
        raise UserError(f"{ann_path}: conversion needs an ANN, got a {ann.meta['kind']}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        snn = convert(ann, data, spec, seed, device, bounds)
    for w in caught:
        print(f"warning: {w.message}", flush=True)
    seed_everything(seed)
    with firing_rates(snn) as rates:
        acc = accuracy(snn, data.test_x, data.test_y, device=device, micro_batch=bounds.micro_batch,
                       time_chunk=bounds.time_chunk, seed=seed)
    ann_acc = accuracy(ann, data.test_x, data.test_y, device=device, micro_batch=bounds.micro_batch)
    metrics = ModelMetrics(name=spec["name"], base=spec.get("base", spec["name"]), kind="convert",
                           replica=cfg["replica"], dataset=data.dataset, seed=seed, clean_acc=acc,
                           ann_clean_acc=ann_acc, method=spec.get("method", default("method")),
                           silent_layers=snn.meta.get("silent_layers", []), firing_rates=rates,
                           n_test=len(data.test_y), meta=snn.meta, config=cfg, epochs=0,
                           wall_s=time.time() - t0, versions=package_versions(),
                           environment=environment(device), device=str(device), init=ann_path)
    save_model(snn.cpu(), out, name=spec["name"], replica=cfg["replica"], dataset=data.dataset, seed=seed,
               clean_acc=acc, config_kind="convert", method=metrics.method)
    metrics.meta = snn.meta
    return write_metrics(metrics, metrics_out)


def _configure(p: argparse.ArgumentParser):
    p.add_argument("--data", required=True)
    p.add_argument("--ann", required=True, help="trained ANN checkpoint")
    p.add_argument("--cfg", required=True, help="JSON model slice: {model: spec, replica, seed, device}")
    p.add_argument("--out", required=True)
    p.add_argument("--metrics", required=True)
    Bounds.add_args(p)


def _run(args):
    """Convert an ANN to an SNN."""
    m = run_convert(load_prepared(args.data), read_cfg(args.cfg), args.ann, args.out, args.metrics,
                    Bounds.from_args(args))
    print(f"{m['name']} r{m['replica']}: SNN clean accuracy {m['clean_acc']:.4f} "
          f"(ANN {m['ann_clean_acc']:.4f}), thresholds {[round(t, 3) for t in m['meta']['thresholds']]}, "
          f"{m['wall_s']:.0f}s")


CLI = {"convert": (_configure, _run)}

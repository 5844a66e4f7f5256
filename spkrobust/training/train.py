"""Training: the ANN (SGD) and spike-based SNN training (BPTT through the surrogate, Adam with
AMSGrad), initialised from a converted SNN (its thresholds times ``init_scale``) or from scratch.

The recipe follows Rathi et al. (docs/fidelity.md), each part a config setting whose default lives in
the schema: augmentation (random crop; flip on CIFAR), weight decay 5e-4, step learning rate (divided
by ``lr_reduce`` at 60/80/90 % of the epochs), and for SNNs the loss on the output summed over T.
Each optimizer step of ``train-snn`` runs in the stage's ``--micro-batch`` images and
``--time-chunk`` steps (the plan's, to fit the job's memory; :mod:`spkrobust.training.step`): the
same weights as one pass over the batch, up to float rounding.

Runs are seeded and resumable: a checkpoint is written atomically after every epoch to
``<out dir>/ckpt/last.pt``; rerunning the same command continues after the last finished epoch
(the checkpoint records a hash of the config slice and is ignored if the slice changed). Each
epoch reseeds the global RNG (dropout, Poisson draws) and the shuffling generator from
``seed`` and the epoch number, so a resumed run gives the same weights as an uninterrupted one.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

from spkrobust.data.datasets import Prepared, augment, batches, load_prepared
from spkrobust.errors import UserError
from spkrobust.io import atomic_save, safe_load
from spkrobust.provenance import environment, package_versions
from spkrobust.nets.inference import accuracy  # noqa: F401  (the final accuracy; also imported from here)
from spkrobust.nets.models import build_model, default_meta, load_model, save_model
from spkrobust.config.options import Bounds, read_cfg, resolve_device
from spkrobust.config.schema import default, defaults
from spkrobust.config.vocab import INPUT_NORMS
from spkrobust.training.common import seed_everything, snn_meta_from
from spkrobust.training.records import ModelMetrics, write_metrics
from spkrobust.training.step import train_step

# ``train_images``: train on a seeded subset of that many prepared training images (None: all)


def input_stats(data: Prepared, input_norm: str) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) of the input normalisation: ``half`` = (0.5, 0.5), i.e. x̂ = 2x - 1 in
    [-1, 1] (the studies'); ``dataset`` = the training set's statistics."""
    if input_norm == "half":
        c = data.shape[0]
        return [0.5] * c, [0.5] * c
    if input_norm == "dataset":
        return list(data.mean), list(data.std)
    raise UserError(f"unknown input_norm {input_norm!r}; allowed: {', '.join(INPUT_NORMS)}")


def _cfg_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fit(model: nn.Module, opt: torch.optim.Optimizer, data: Prepared, hp: dict, seed: int, device: torch.device,
         ckpt: Path, cfg_hash: str, desc: str, bounds: Bounds | None = None) -> dict:
    """The shared epoch loop: resume, train (each step within ``bounds``: :func:`train_step`),
    checkpoint after each epoch."""
    epochs, bs = int(hp["epochs"]), int(hp["batch_size"])
    train_x, train_y = data.train_x, data.train_y
    if hp.get("train_images"):  # a seeded subset of the prepared training set (e.g. costly SNN BPTT)
        keep = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(int(seed)))[: int(hp["train_images"])]
        train_x, train_y = train_x[keep], train_y[keep]
    steps_per_epoch = math.ceil(len(train_x) / bs)
    per_epoch = hp["lr_schedule"] == "step"
    if per_epoch:  # divide by lr_reduce from the epochs at the milestones (each epoch once, as Rathi et al.)
        milestones = sorted({int(f * epochs) for f in hp["lr_milestones"]} - {0})
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=1.0 / float(hp["lr_reduce"]))
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    scale_out = float(getattr(model, "T", 1)) if hp.get("loss_T") == "sum" and model.meta["kind"] == "snn" else 1.0
    start, history = 0, []
    if ckpt.exists():
        state = safe_load(ckpt, what="training checkpoint")
        if state.get("cfg_hash") == cfg_hash:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            start, history = int(state["epoch"]) + 1, list(state["history"])
            print(f"{desc}: resuming after epoch {start} from {ckpt}", flush=True)
        else:
            print(f"{desc}: ignoring {ckpt} (made with another config)", flush=True)
    for epoch in range(start, epochs):
        t0 = time.time()
        gen = torch.Generator().manual_seed(int(seed) * 100003 + epoch)
        torch.manual_seed(int(seed) * 7919 + epoch)
        model.train()
        tot, n, correct = 0.0, 0, 0
        for xb, yb in tqdm(batches(train_x, train_y, bs, shuffle=True, generator=gen),
                           total=steps_per_epoch, desc=f"{desc} epoch {epoch + 1}/{epochs}", mininterval=10):
            if hp["augment"]:
                xb = augment(xb, data.dataset)
            xb, yb = xb.to(device), yb.to(device)
            # an SNN's output is its mean over T; loss_T: sum -> times T
            loss, out = train_step(model, opt, xb, yb, scale_out, bounds)
            if not per_epoch:
                sched.step()
            tot += loss * len(yb)
            n += len(yb)
            correct += (out.argmax(1) == yb).sum().item()
        if per_epoch:
            sched.step()
        history.append({"epoch": epoch + 1, "loss": tot / max(1, n), "train_acc": correct / max(1, n),
                        "lr": opt.param_groups[0]["lr"], "seconds": time.time() - t0})
        print(f"{desc}: epoch {epoch + 1}/{epochs} loss={history[-1]['loss']:.4f} "
              f"train_acc={history[-1]['train_acc']:.4f} ({history[-1]['seconds']:.0f}s)", flush=True)
        atomic_save({"cfg_hash": cfg_hash, "epoch": epoch, "model": model.state_dict(), "opt": opt.state_dict(),
                     "sched": sched.state_dict(), "history": history}, ckpt)
    return {"history": history, "resumed_from_epoch": start}


def _metrics(model, data: Prepared, cfg: dict, kind: str, fit: dict, t0: float, device, extra=None,
             bounds: Bounds | None = None) -> ModelMetrics:
    bounds = bounds or Bounds()  # BPTT's cut also bounds inference (which keeps less per image and step)
    acc = accuracy(model, data.test_x, data.test_y, device=device, micro_batch=bounds.micro_batch,
                   time_chunk=bounds.time_chunk)
    spec = cfg["model"]
    return ModelMetrics(name=spec["name"], base=spec.get("base", spec["name"]), kind=kind, replica=cfg["replica"],
                        dataset=data.dataset, seed=cfg["seed"], clean_acc=acc, n_test=len(data.test_y),
                        n_train=len(data.train_y), meta=model.meta, config=cfg, wall_s=time.time() - t0,
                        versions=package_versions(), environment=environment(device),
                        device=str(device), **fit, **(extra or {}))


def _train_and_save(model, opt, data: Prepared, cfg: dict, hp: dict, kind: str, t0: float, device,
                    out, metrics_out, extra: dict | None = None, bounds: Bounds | None = None) -> dict:
    """Shared tail of ANN and SNN training: fit (resumable), measure, save the model, write metrics."""
    spec, seed = cfg["model"], int(cfg["seed"])
    fit = _fit(model, opt, data, hp, seed, device, Path(out).parent / "ckpt" / "last.pt", _cfg_hash(cfg),
               f"{spec['name']} r{cfg['replica']}", bounds)
    metrics = _metrics(model, data, cfg, kind, fit, t0, device,
                       {"epochs": int(hp["epochs"]), "train": hp, **(extra or {})}, bounds)
    save_model(model.cpu(), out, name=spec["name"], replica=cfg["replica"], dataset=data.dataset, seed=seed,
               clean_acc=metrics.clean_acc, config_kind=kind)
    metrics.meta = model.meta
    return write_metrics(metrics, metrics_out)


def train_ann(data: Prepared, cfg: dict, out: str | Path, metrics_out: str | Path | None = None) -> dict:
    """Train the ANN described by ``cfg`` (a model slice: ``{model, replica, seed, device}``)."""
    t0 = time.time()
    spec, seed = cfg["model"], int(cfg["seed"])
    hp = {**defaults("ann_train"), **(spec.get("train") or {})}
    device = resolve_device(cfg["device"])
    seed_everything(seed)
    model = build_model(_scratch_meta("ann", spec, data)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=float(hp["lr"]), momentum=float(hp["momentum"]),
                          weight_decay=float(hp["weight_decay"]))
    return _train_and_save(model, opt, data, cfg, hp, "ann", t0, device, out, metrics_out)


def _scratch_meta(kind: str, spec: dict, data: Prepared) -> dict:
    """Metadata of a network trained from random initialisation (``spec`` schema-filled)."""
    c, h, _ = data.shape
    mean, std = input_stats(data, spec.get("input_norm", default("input_norm")))
    return default_meta(kind, spec.get("arch", default("arch")), c, h, data.num_classes, mean, std,
                        dropout=spec.get("dropout"), conv_dropout=spec.get("conv_dropout"))


def train_snn(data: Prepared, cfg: dict, out: str | Path, metrics_out: str | Path | None = None,
              init: str | Path | None = None, bounds: Bounds | None = None) -> dict:
    """Spike-based training (BPTT through the surrogate, Adam) from ``init`` (a converted SNN, whose
    thresholds are multiplied by ``init_scale``) or, without ``init``, from random initialisation;
    each step and the final accuracy in ``bounds`` (image micro-batches, time chunks: the same
    weights up to float rounding, :mod:`spkrobust.training.step`)."""
    t0 = time.time()
    spec, seed = cfg["model"], int(cfg["seed"])
    hp = {**defaults("snn_train"), **(spec.get("train") or {})}
    device = resolve_device(cfg["device"])
    seed_everything(seed)
    if init is not None:
        parent = load_model(init)
        meta = snn_meta_from(spec, parent.meta)
        if parent.meta["kind"] == "ann":  # from an ANN directly: weights only, thresholds 1
            meta["thresholds"] = None
        elif parent.meta.get("config_kind") == "convert":  # hybrid training starts at scaled thresholds
            meta["thresholds"] = [t * float(spec.get("init_scale", default("init_scale"))) for t in meta["thresholds"]]
        model = build_model(meta, device=device)
        missing = model.load_state_dict(parent.state_dict(), strict=False)
        if any(not k.startswith("encoder.") and k not in ("mean", "std") for k in missing.missing_keys):
            raise UserError(f"{init}: weights do not match {meta['arch']}: missing {missing.missing_keys[:3]}")
    else:
        meta = snn_meta_from(spec, _scratch_meta("ann", spec, data))
        model = build_model(meta, device=device)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"]),
                           amsgrad=bool(hp["amsgrad"]))
    return _train_and_save(model, opt, data, cfg, hp, "snn", t0, device, out, metrics_out,
                           {"init": str(init) if init else None}, bounds)


# ---- CLI ----------------------------------------------------------------------------------------

def _configure_common(p: argparse.ArgumentParser):
    p.add_argument("--data", required=True, help="prepared dataset (.pt)")
    p.add_argument("--cfg", required=True, help="JSON model slice: {model: spec, replica, seed, device}")
    p.add_argument("--out", required=True)
    p.add_argument("--metrics", required=True)


def _configure_snn(p: argparse.ArgumentParser):
    _configure_common(p)
    p.add_argument("--init", default=None, help="converted SNN (or ANN) to start from; omit to train from scratch")
    Bounds.add_args(p)


def _run_ann(args):
    """Train an ANN."""
    m = train_ann(load_prepared(args.data), read_cfg(args.cfg), args.out, args.metrics)
    print(f"{m['name']} r{m['replica']}: clean accuracy {m['clean_acc']:.4f} in {m['wall_s']:.0f}s")


def _run_snn(args):
    """Spike-based training of an SNN."""
    m = train_snn(load_prepared(args.data), read_cfg(args.cfg), args.out, args.metrics, init=args.init,
                  bounds=Bounds.from_args(args))
    print(f"{m['name']} r{m['replica']}: clean accuracy {m['clean_acc']:.4f} in {m['wall_s']:.0f}s")


CLI = {"train-ann": (_configure_common, _run_ann), "train-snn": (_configure_snn, _run_snn)}

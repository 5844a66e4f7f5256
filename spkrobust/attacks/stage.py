"""The ``grad`` and ``craft`` stages: their command lines.  Their files (the shared FGSM gradient
sign, the adversarial set) are :mod:`spkrobust.attacks.files`; the attacks themselves
:mod:`spkrobust.attacks.registry`."""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn as nn

from spkrobust.attacks.registry import (craft, derive_seed, fgsm_gradient, is_stochastic, resolve_attack, set_grad_mode,
                               zero_grad_mask)
from spkrobust.config.expand import eps_label, parse_eps
from spkrobust.errors import FileProblem
from spkrobust.config.options import AttackOptions, Bounds, read_cfg, resolve_device
from spkrobust.attacks.files import load_adv, load_grad, write_adv, write_grad
from spkrobust.config.vocab import GRADIENT_TYPES
from spkrobust.nets.bounded import set_bounds


# ---- files --------------------------------------------------------------------------------------

def _load_inputs(data_path: str):
    from spkrobust.data.datasets import load_prepared

    prep = load_prepared(data_path)
    x, y = prep.test_inputs()
    idx = getattr(prep, "test_idx", None)
    if idx is None:
        idx = torch.arange(len(x))
    return prep, x, y, torch.as_tensor(idx).long()


def _load_source(model_path: str, device, bounds: Bounds):
    """The source model, run in the plan's micro-batches and time chunks (:mod:`spkrobust.nets.bounded`:
    the attack batch, its randomness and the results stay those of an uncut run)."""
    from spkrobust.nets.models import load_model

    return set_bounds(load_model(model_path, device=device), bounds.micro_batch, bounds.time_chunk)


def _source_ids(cfg: dict, model: nn.Module) -> tuple[str, int]:
    meta = getattr(model, "meta", None) or {}
    name = cfg.get("source") or meta.get("name") or "source"
    rep = cfg.get("source_replica", cfg.get("replica", meta.get("replica", 1)))
    return str(name), int(rep)


def _configure_common(p: argparse.ArgumentParser, what: str):
    p.add_argument("--data", required=True, help="prepared dataset (.pt)")
    p.add_argument("--model", required=True, help="source model (.pt)")
    p.add_argument("--cfg", required=True, help="JSON: seed, device, eval.{eot_samples,attack_batch_size,"
                                                f"grad_mode}}, dataset, source, replica{what}")
    p.add_argument("--out", required=True)
    Bounds.add_args(p)


def _configure_grad(p: argparse.ArgumentParser):
    _configure_common(p, "")


def _run_grad(args):
    """Sign of the source's input gradient on the test set (shared by FGSM at every eps)."""
    cfg = read_cfg(args.cfg)
    opts = AttackOptions.from_cfg(cfg)
    device = resolve_device(opts.device)
    eot, bs, grad_mode = opts.eot_samples, opts.attack_batch_size, opts.grad_mode
    bounds = Bounds.from_args(args)
    prep, x, y, idx = _load_inputs(args.data)
    model = _load_source(args.model, device, bounds)
    name, rep = _source_ids(cfg, model)
    applied_mode = set_grad_mode(model, grad_mode)
    seed = derive_seed(opts.seed, "grad", name, rep)
    torch.manual_seed(seed)
    t0 = time.time()
    sign = fgsm_gradient(model, x, y, eot_samples=eot, batch_size=bs, device=device)
    zfrac = float(zero_grad_mask(sign).float().mean())
    meta = {"source": name, "source_replica": rep, "dataset": cfg.get("dataset", prep.dataset), "seed": seed,
            "eot_samples": eot if is_stochastic(model) else 1, "grad_mode": applied_mode,
            "zero_grad_frac": zfrac, "time_s": round(time.time() - t0, 3), "n": len(x),
            "source_kind": (model.meta or {}).get("kind"), "stochastic": is_stochastic(model)}
    write_grad(args.out, sign, idx, y, meta)
    print(f"grad {name} r{rep}: n={len(x)} zero_grad_frac={zfrac:.4f} eot={meta['eot_samples']} "
          f"in {meta['time_s']:.1f}s -> {args.out}")
    if zfrac > 0.05:
        print(f"warning: {zfrac:.1%} of inputs have an all-zero input gradient (gradient masking?)", file=sys.stderr)


def _configure_craft(p: argparse.ArgumentParser):
    _configure_common(p, ", attack")
    p.add_argument("--grad", default=None, help="gradient file from 'spkrobust grad' (FGSM only)")
    p.add_argument("--attack-cfg", required=True, help='JSON: {"type": "pgd", "steps": 7, ...}')
    p.add_argument("--eps", required=True, help="pixel units: 0.1, 8/255 or the label 8_255")
    p.add_argument("--set", action="append", default=[], metavar="ATTACK=PATH",
                   help="an ensemble member {set: ATTACK}: that attack's set from this source replica at this eps")


def _run_craft(args):
    """Craft one adversarial set (one source × attack × eps)."""
    cfg = read_cfg(args.cfg)
    attack_cfg = read_cfg(args.attack_cfg, "--attack-cfg")
    eps = parse_eps(args.eps, "--eps")
    opts = AttackOptions.from_cfg(cfg)
    device = resolve_device(opts.device)
    eot, bs, grad_mode = opts.eot_samples, opts.attack_batch_size, opts.grad_mode
    atype, _ = resolve_attack(attack_cfg, eps, cfg_eot=eot)  # fail fast, before loading anything
    attack_name = str(cfg.get("attack") or attack_cfg.get("name") or atype)
    bounds = Bounds.from_args(args)
    prep, x, y, idx = _load_inputs(args.data)
    model = _load_source(args.model, device, bounds)
    name, rep = _source_ids(cfg, model)
    applied_mode = set_grad_mode(model, grad_mode)
    grad = None
    if args.grad is not None and atype == "fgsm" and attack_cfg.get("grad") is None:
        g = load_grad(args.grad, n=len(x))
        gm = g.get("meta") or {}
        if not torch.equal(g["indices"].long(), idx) or not torch.equal(g["labels"].long(), y):
            raise FileProblem(f"{args.grad}: gradient was computed on other test images than {args.data}; rerun grad")
        if (gm.get("source"), gm.get("source_replica")) != (name, rep):
            raise FileProblem(f"{args.grad}: gradient belongs to {gm.get('source')} r{gm.get('source_replica')}, "
                              f"not {name} r{rep}")
        if gm.get("grad_mode") != applied_mode or int(gm.get("eot_samples") or 1) != (eot if is_stochastic(model) else 1):
            raise FileProblem(f"{args.grad}: gradient was computed with grad_mode={gm.get('grad_mode')} "
                              f"eot_samples={gm.get('eot_samples')}, the config asks for {applied_mode}/{eot}; rerun grad")
        grad = g["sign"]
    elif args.grad is not None:
        print(f"note: --grad is used by fgsm without its own grad estimator only; ignored for {atype}", file=sys.stderr)
    label = eps_label(args.eps)
    sets = {a: _load_member_set(path, a, idx, y, name, rep, label) for a, path in _set_args(args.set)}
    seed = derive_seed(opts.seed, "craft", name, rep, attack_name, label)
    x_adv, info = craft(model, x, y, attack_cfg, eps, eot_samples=eot, batch_size=bs, seed=seed, grad=grad,
                        sets=sets, device=device)
    if grad is not None:
        info["time_s"] = round(info["time_s"] + float((g.get("meta") or {}).get("time_s", 0.0)), 3)
        info["grad_file"] = str(args.grad)
    meta = {"source": name, "source_replica": rep, "attack": attack_name, "attack_type": atype,
            "attack_params": {**{k: v for k, v in attack_cfg.items() if k != "name"}, "type": atype},
            "attack_params_resolved": info["attack_params"], "eps": eps, "eps_label": label, "seed": seed,
            "zero_grad_frac": info["zero_grad_frac"], "time_s": info["time_s"],
            "grad_mode": (info.get("grad") or applied_mode) if atype in GRADIENT_TYPES else None,
            "ensemble": info.get("ensemble"), "grad_search": info.get("grad_search"),
            "eot_samples": info["eot_samples"], "dataset": cfg.get("dataset", prep.dataset),
            "source_kind": (model.meta or {}).get("kind"), "source_stochastic": is_stochastic(model),
            "n": len(x), "max_linf": float((x_adv - x).abs().max()) if len(x) else 0.0}
    write_adv(args.out, x_adv, idx, y, meta)
    z = "n/a" if meta["zero_grad_frac"] is None else f"{meta['zero_grad_frac']:.4f}"
    print(f"craft {name} r{rep} {attack_name} eps={label}: n={len(x)} max|d|={meta['max_linf']:.5f} "
          f"zero_grad_frac={z} in {meta['time_s']:.1f}s -> {args.out}")


def _set_args(given: list[str]) -> list[tuple[str, str]]:
    out = []
    for g in given:
        a, sep, path = g.partition("=")
        if not sep or not a or not path:
            raise FileProblem(f"--set {g!r}: expected ATTACK=PATH")
        out.append((a, path))
    return out


def _load_member_set(path: str, attack: str, idx, y, source: str, rep: int, label: str):
    """``(x_adv, meta)`` of a stored set an ensemble member reuses, checked to be ``attack``'s set of
    this source replica at this eps on these images."""
    d = load_adv(path)
    m = d["meta"]
    if not torch.equal(d["indices"].long(), idx) or not torch.equal(d["labels"].long(), y):
        raise FileProblem(f"{path}: the set was crafted on other test images than the ensemble's; rerun craft")
    got = (m.get("attack"), m.get("source"), m.get("source_replica"), m.get("eps_label"))
    if got != (attack, source, rep, label):
        raise FileProblem(f"{path}: the set is {got[0]} from {got[1]} r{got[2]} at {got[3]}, not {attack} from "
                          f"{source} r{rep} at {label}")
    return d["x_adv"], m


CLI = {"grad": (_configure_grad, _run_grad), "craft": (_configure_craft, _run_craft)}

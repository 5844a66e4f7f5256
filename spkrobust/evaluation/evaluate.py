"""Clean and adversarial accuracy of a target model.

* ``clean`` (once per target): accuracy on the clean test images. A stochastic target (Poisson
  input) is evaluated ``eval.repeats`` times → mean and sample std. Every target's forward pass is
  run at least twice to *detect* randomness: the JSON reports how many predictions and how much the
  logits changed between two passes (``repeat_check``), also for targets that claim to be
  deterministic.
* ``evaluate`` (one adversarial set × one target): adversarial accuracy, repeated the same way;
  the clean accuracy comes from the target's clean JSON. Setting: ``white-box`` (same model name and
  replica), ``black-box`` (same name, other replica), ``transfer`` (other model).

Repeat ``r`` of a target uses the seed ``derive_seed(seed, "eval", target, replica, r)`` in both
stages (common random numbers): at eps = 0 the adversarial accuracy equals the clean accuracy
exactly, and differences between eps are not inflated by independent Poisson noise. The Poisson
spikes of an image are keyed on that seed, the repeat and the image's position in the prepared
test split (:func:`spkrobust.nets.encoding.poisson_stream`), so a record does not depend on the
evaluation batch, nor on the micro-batch and time chunk (``--micro-batch``, ``--time-chunk``:
:class:`spkrobust.config.options.Bounds`, set per job by the plan) that bound the memory.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn

from spkrobust.attacks.registry import AdversarialSetError, derive_seed, is_stochastic, verify_adv
from spkrobust.attacks.files import load_adv
from spkrobust.config.expand import setting_of
from spkrobust.errors import FileProblem, UserError
from spkrobust.io import atomic_write_json, read_json
from spkrobust.provenance import environment
from spkrobust.evaluation.outcomes import encode as encode_outcomes
from spkrobust.config.options import Bounds, EvalOptions, read_cfg, resolve_device
from spkrobust.nets.encoding import poisson_stream
from spkrobust.nets.inference import bounded_forward
from spkrobust.config.vocab import CLEAN_FORMAT
from spkrobust.evaluation.records import EvalRecord, write_record



@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256, device="cpu", seed: int | None = None,
            repeat: int = 0, positions=None, bounds: Bounds | None = None) -> torch.Tensor:
    """Logits for float pixels ``x`` (CPU tensor), batched; returns CPU float logits. With ``seed``,
    the Poisson spikes of image ``i`` are keyed on (``seed``, ``positions[i]`` — default ``i`` —,
    ``repeat``); ``bounds`` cut each batch into micro-batches and time chunks."""
    model.eval()
    bounds = bounds or Bounds()
    pos = torch.arange(len(x)) if positions is None else torch.as_tensor(positions, dtype=torch.int64)
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i: i + batch_size].to(device)
        if seed is None:
            lg = bounded_forward(model, xb, bounds.micro_batch, bounds.time_chunk)
        else:
            with poisson_stream(model, seed, pos[i: i + batch_size], repeat):
                lg = bounded_forward(model, xb, bounds.micro_batch, bounds.time_chunk)
        out.append(lg.float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def repeated_logits(model: nn.Module, x: torch.Tensor, passes: int, seeds: list[int], batch_size: int,
                    device="cpu", positions=None, bounds: Bounds | None = None) -> list[torch.Tensor]:
    res = []
    for r in range(passes):
        torch.manual_seed(int(seeds[r]))
        res.append(predict(model, x, batch_size, device, int(seeds[r]), r, positions, bounds))
    return res


def _mean_std(v: list[float]) -> tuple[float, float]:
    return float(statistics.fmean(v)), (float(statistics.stdev(v)) if len(v) > 1 else 0.0)


def _seeds(seed: int, name: str, rep: int, n: int) -> list[int]:
    return [derive_seed(seed, "eval", name, rep, r) for r in range(n)]


def accuracy_repeats(model, x, y, repeats, seeds, batch_size, device, min_passes=1, positions=None, bounds=None):
    """Accuracy over ``repeats`` passes (1 for a deterministic model), each pass's per-image
    correctness, and the two-pass repeat check."""
    reps = repeats if is_stochastic(model) else 1
    passes = max(reps, min_passes)
    logits = repeated_logits(model, x, passes, seeds, batch_size, device, positions, bounds)
    correct = [(lg.argmax(1) == y).numpy() for lg in logits[:reps]]
    accs = [float(c.mean()) if len(y) else 0.0 for c in correct]
    check = None
    if passes >= 2:
        a, b = logits[0], logits[1]
        check = {"passes": 2,
                 "pred_disagree_frac": float((a.argmax(1) != b.argmax(1)).float().mean()) if len(a) else 0.0,
                 "logit_max_abs_diff": float((a - b).abs().max()) if len(a) else 0.0}
        check["differs"] = bool(check["logit_max_abs_diff"] > 0)
    return accs, correct, check


def clean_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int = 3, batch_size: int = 256,
                   seeds: list[int] | None = None, device="cpu", bounds: Bounds | None = None) -> dict:
    """``{clean_acc, clean_acc_std, accs, repeats, n, stochastic, repeat_check, outcomes,
    firing_rates}`` (``firing_rates``: each spiking layer's spikes per neuron per step over these
    passes, see :func:`spkrobust.nets.models.firing_rates`; empty for an ANN); ``outcomes`` (see :mod:`spkrobust.evaluation.outcomes`) covers the images of ``x`` in order."""
    from spkrobust.nets.models import firing_rates

    n_pass = max(repeats, 2)
    seeds = seeds or list(range(n_pass))
    with firing_rates(model) as rates:
        accs, correct, check = accuracy_repeats(model, x, y, repeats, seeds, batch_size, device, min_passes=2,
                                                bounds=bounds)
    m, s = _mean_std(accs)
    return {"clean_acc": m, "clean_acc_std": s, "accs": accs, "repeats": len(accs), "n": len(y),
            "stochastic": is_stochastic(model), "repeat_check": check, "outcomes": encode_outcomes(correct),
            "firing_rates": rates}


def adversarial_accuracy(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, repeats: int = 3,
                         batch_size: int = 256, seeds: list[int] | None = None, device="cpu",
                         positions=None, split_size: int | None = None, bounds: Bounds | None = None) -> dict:
    """``{adv_acc, adv_acc_std, accs, repeats, n, outcomes}``; ``positions`` are the images'
    positions in the prepared test split (default: the whole split in order), which also key
    their Poisson spikes (the same as in ``clean``)."""
    seeds = seeds or list(range(repeats))
    accs, correct, _ = accuracy_repeats(model, x_adv, y, repeats, seeds, batch_size, device, min_passes=1,
                                        positions=positions, bounds=bounds)
    m, s = _mean_std(accs)
    return {"adv_acc": m, "adv_acc_std": s, "accs": accs, "repeats": len(accs), "n": len(y),
            "outcomes": encode_outcomes(correct, positions, split_size)}


# ---- CLI ----------------------------------------------------------------------------------------

def _load(data_path: str):
    from spkrobust.data.datasets import load_prepared

    prep = load_prepared(data_path)
    return (prep, *prep.test_inputs())


def _target_ids(cfg: dict, model: nn.Module) -> tuple[str, int]:
    meta = getattr(model, "meta", None) or {}
    name = cfg.get("target") or cfg.get("model") or meta.get("name") or "target"
    rep = cfg.get("target_replica", cfg.get("replica", meta.get("replica", 1)))
    return str(name), int(rep)


def _num_classes(model: nn.Module, prep) -> int | None:
    nc = (getattr(model, "meta", None) or {}).get("num_classes")
    if nc is None and getattr(prep, "classes", None):
        nc = len(prep.classes)
    return int(nc) if nc is not None else None


def _configure_clean(p: argparse.ArgumentParser):
    p.add_argument("--data", required=True, help="prepared dataset (.pt)")
    p.add_argument("--model", required=True, help="target model (.pt)")
    p.add_argument("--cfg", required=True, help="JSON: seed, device, eval.{repeats,batch_size}, dataset, model, replica")
    p.add_argument("--out", required=True)
    Bounds.add_args(p)


def _run_clean(args):
    """Clean accuracy of one target (mean ± std over repeats when stochastic)."""
    from spkrobust.nets.models import load_model

    cfg = read_cfg(args.cfg)
    opts = EvalOptions.from_cfg(cfg)
    repeats, bs, device = opts.repeats, opts.batch_size, resolve_device(opts.device)
    bounds = Bounds.from_args(args)
    prep, x, y = _load(args.data)
    model = load_model(args.model, device=device)
    name, rep = _target_ids(cfg, model)
    t0 = time.time()
    res = clean_accuracy(model, x, y, repeats, bs, _seeds(opts.seed, name, rep, max(repeats, 2)), device, bounds)
    meta = getattr(model, "meta", None) or {}
    out = {"format": CLEAN_FORMAT, "dataset": cfg.get("dataset", prep.dataset), "model": name, "replica": rep,
           "kind": meta.get("kind"), "num_classes": _num_classes(model, prep), "seed": opts.seed,
           "time_s": round(time.time() - t0, 3), "environment": environment(device), **res}
    atomic_write_json(out, args.out)
    rc = res["repeat_check"]
    print(f"clean {name} r{rep}: acc {res['clean_acc']:.4f} ± {res['clean_acc_std']:.4f} over {res['repeats']} "
          f"repeat(s), n={res['n']}, stochastic={res['stochastic']}, two passes differ: {rc['differs']} "
          f"(pred disagree {rc['pred_disagree_frac']:.4f}) -> {args.out}")


def _configure_evaluate(p: argparse.ArgumentParser):
    p.add_argument("--data", required=True, help="prepared dataset (.pt)")
    p.add_argument("--adv", required=True, help="adversarial set from 'spkrobust craft'")
    p.add_argument("--target", required=True, nargs="+", help="target model(s) (.pt)")
    p.add_argument("--clean", required=True, nargs="+", help="each target's clean JSON from 'spkrobust clean'")
    p.add_argument("--cfg", required=True, help="JSON: seed, device, eval.{repeats,batch_size}, dataset, source, "
                                                "source_replica, attack, eps[, target, target_replica]")
    p.add_argument("--out", required=True, nargs="+", help="one record per target")
    Bounds.add_args(p)


def _load_adv_checked(adv_path: str, data_path: str, prep, x: torch.Tensor, y: torch.Tensor):
    """The adversarial set, checked against the data: indices, labels, eps-ball and range."""
    adv = load_adv(adv_path)
    am = adv["meta"]
    x_adv = adv["x_adv"].float()
    idx = adv["indices"].long()
    if len(idx) != len(x_adv) or len(adv["labels"]) != len(x_adv):
        raise FileProblem(f"{adv_path}: x_adv, indices and labels differ in length; rerun craft")
    test_idx = getattr(prep, "test_idx", None)
    pos = torch.arange(len(x))
    if test_idx is not None and len(test_idx) == len(x):
        lookup = {int(v): i for i, v in enumerate(torch.as_tensor(test_idx).tolist())}
        missing = [int(v) for v in idx.tolist() if int(v) not in lookup]
        if missing:
            raise FileProblem(f"{adv_path}: made from test images not in {data_path} (e.g. index {missing[0]}); rerun craft")
        pos = torch.tensor([lookup[int(v)] for v in idx.tolist()], dtype=torch.long)
    elif len(idx) != len(x):
        raise FileProblem(f"{adv_path}: {len(idx)} inputs but {data_path} has {len(x)} test images; rerun craft")
    x, y = x[pos], y[pos]
    if not torch.equal(adv["labels"].long(), y):
        raise FileProblem(f"{adv_path}: labels differ from {data_path}; the set was crafted on other data, rerun craft")
    try:
        verify_adv(x, x_adv, float(am["eps"]))
    except AdversarialSetError as e:
        raise FileProblem(f"{adv_path}: {e}") from None
    return am, x_adv, y, pos


def _run_evaluate(args):
    """Adversarial accuracy of one adversarial set on each target; writes one record per target.

    The data and the adversarial set are loaded and checked once; each target model once."""
    from spkrobust.nets.models import load_model

    if not len(args.target) == len(args.clean) == len(args.out):
        raise UserError(f"evaluate: --target, --clean and --out need the same number of paths "
                        f"({len(args.target)}, {len(args.clean)}, {len(args.out)})")
    cfg = read_cfg(args.cfg)
    if len(args.target) > 1:  # names come from each target's metadata
        cfg = {k: v for k, v in cfg.items() if k not in ("target", "target_replica", "model", "replica")}
    opts = EvalOptions.from_cfg(cfg)
    repeats, bs, device = opts.repeats, opts.batch_size, resolve_device(opts.device)
    bounds = Bounds.from_args(args)
    prep, x, y = _load(args.data)
    split_size = len(x)
    am, x_adv, y, pos = _load_adv_checked(args.adv, args.data, prep, x, y)
    source = str(cfg.get("source") or am["source"])
    sr = int(cfg.get("source_replica", am["source_replica"]))
    if (source, sr) != (am["source"], int(am["source_replica"])):
        raise FileProblem(f"{args.adv}: crafted on {am['source']} r{am['source_replica']}, the config says {source} r{sr}")
    for target_path, clean_path, out in zip(args.target, args.clean, args.out):
        clean = read_json(clean_path)
        if not isinstance(clean, dict) or clean.get("format") != CLEAN_FORMAT:
            raise FileProblem(f"{clean_path}: not a spkrobust clean-accuracy JSON; rerun 'spkrobust clean'")
        model = load_model(target_path, device=device)
        name, rep = _target_ids(cfg, model)
        if (clean.get("model"), int(clean.get("replica", -1))) != (name, rep):
            raise FileProblem(f"{clean_path}: clean accuracy of {clean.get('model')} r{clean.get('replica')}, "
                              f"not of the target {name} r{rep}")
        t0 = time.time()
        res = adversarial_accuracy(model, x_adv, y, repeats, bs, _seeds(opts.seed, name, rep, repeats), device,
                                   pos.numpy(), split_size, bounds)
        tmeta = getattr(model, "meta", None) or {}
        record = write_record(EvalRecord(
            dataset=cfg.get("dataset", am.get("dataset", prep.dataset)),
            source=source, source_replica=sr,
            attack=str(cfg.get("attack") or am["attack"]), attack_params=am.get("attack_params"),
            attack_type=am.get("attack_type"),
            eps=float(am["eps"]), eps_label=str(am.get("eps_label", cfg.get("eps"))),
            target=name, target_replica=rep, setting=setting_of(source, sr, name, rep),
            clean_acc=clean.get("clean_acc"), clean_acc_std=clean.get("clean_acc_std"),
            clean_repeats=clean.get("repeats"),
            adv_acc=res["adv_acc"], adv_acc_std=res["adv_acc_std"], adv_accs=res["accs"],
            repeats=res["repeats"], n=res["n"], outcomes=res["outcomes"],
            zero_grad_frac=am.get("zero_grad_frac"), eot_samples=am.get("eot_samples"),
            grad_mode=am.get("grad_mode"), ensemble=am.get("ensemble"), craft_seed=am.get("seed"),
            craft_time_s=am.get("time_s"),
            seed=opts.seed, stochastic=is_stochastic(model),
            source_stochastic=am.get("source_stochastic"),
            source_kind=am.get("source_kind"), target_kind=tmeta.get("kind"),
            num_classes=_num_classes(model, prep), time_s=round(time.time() - t0, 3),
        ), out)
        print(f"evaluate {record['attack']} eps={record['eps_label']} {source} r{sr} -> {name} r{rep} "
              f"({record['setting']}): adv {res['adv_acc']:.4f} ± {res['adv_acc_std']:.4f} (clean "
              f"{record['clean_acc']:.4f}) -> {out}")


CLI = {"clean": (_configure_clean, _run_clean), "evaluate": (_configure_evaluate, _run_evaluate)}

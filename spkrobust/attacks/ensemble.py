"""The ``ensemble`` attack: a per-sample worst case over member attacks.

``{type: ensemble, members: [{type: apgd, loss: dlr, grad: {mode: bptt, surrogate: atan}}, ...],
stop_early: true}`` runs every member (any attack type × gradient estimator, see
:mod:`spkrobust.nets.estimators`) on the same images of one source, as Özdenizci & Legenstein (TMLR 2024,
IGITUGraz/RobustSNNConversion ``attack/ensemble.py``) do with 19 gradient modes. An image counts as
robust only if it survives every member; the set keeps, for each image, the candidate (clean image
or a member's adversarial example) on which the source's margin ``z_y − max_{j≠y} z_j`` is lowest,
so a broken image keeps an adversarial example and, on a stochastic source, the most confidently
wrong one (a barely-successful example of one Poisson draw is often classified right on the next).

"Broke" is judged on the source while crafting (white-box): margin < 0, on a stochastic source with
the logits summed over ``max(judge_draws, eot_samples)`` draws (``judge_draws``: the schema's default
8). The first member attacks every image; with ``stop_early`` (default) each later member attacks
only the images no earlier member broke (cheaper; the order of the members then decides which one
gets the credit); without it every member attacks every image, so each member's own accuracy on the
same images is known too.

The set's meta carries ``ensemble``: member names, and per member the packed bits (see
:mod:`spkrobust.attacks.ensemble_record`, in the set's image order) of the images it attacked and of
those it broke, plus the images the source got wrong before any attack. Each member's seed is
``derive_seed(seed, "member", i)``, so a member crafted alone on the same images with that seed
gives the same set.

A member ``{set: pgd}`` reuses the stored set of the grid's attack ``pgd`` (same source replica, same
eps; handed in as ``sets``) instead of crafting it again: nothing is crafted twice, the spec lives
once in ``attacks``, and the ensemble's set then differs from that attack's only where a later member
found something worse, so "single attack − ensemble" measures exactly what the later members add.
The member record names the reused set's seed, time and estimator.

Like torchattacks' ``MultiAttack``, the ensemble sits above the attacks it combines and imports
only their base: :func:`spkrobust.attacks.registry.craft` hands it the function that crafts one
member (``craft_member``) and the one that checks a member's spec (``resolve_member``).
"""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn as nn

from spkrobust.attacks.base import derive_seed, is_stochastic, verify_adv
from spkrobust.attacks.ensemble_record import decode_record, encode_record
from spkrobust.attacks.search import expand_lists
from spkrobust.errors import UserError
from spkrobust.nets.estimators import parse_grad

__all__ = ["craft_ensemble", "decode_record", "member_name", "resolve_members", "source_margin",
           "source_predict"]


def member_name(spec: dict) -> str:
    """A member's label: its ``name``, else a reused set's attack name, else ``type[-loss][-grad label]``
    (e.g. ``apgd-dlr-bptt-atan-w0.5``)."""
    if spec.get("name"):
        return str(spec["name"])
    if spec.get("set"):
        return str(spec["set"])
    parts = [str(spec.get("type"))]
    if spec.get("loss"):
        parts.append(str(spec["loss"]))
    if spec.get("grad") is not None:
        parts.append(parse_grad(spec["grad"]).label())
    return "-".join(parts)


def resolve_members(members, eps: float, cfg_eot: int, resolve_member: Callable) -> list[dict]:
    """Check the member list (each a non-ensemble attack spec, checked by ``resolve_member(spec, eps,
    cfg_eot)``; a listed hart ``gamma`` / assg ``a`` becomes one member per value); returns the specs with
    their names."""
    if not isinstance(members, list) or not members:
        raise UserError("attack ensemble: members must be a non-empty list of attack specs {type: ..., params}")
    members = expand_lists(members)  # a listed hart γ / assg a: one member per value
    out, seen = [], set()
    for i, m in enumerate(members):
        if not isinstance(m, dict):
            raise UserError(f"attack ensemble: members[{i}] must be a mapping with a 'type', got {m!r}")
        if m.get("type") == "ensemble":
            raise UserError(f"attack ensemble: members[{i}] is an ensemble; ensembles do not nest")
        if "set" not in m:  # a {set: ...} member's keys are the schema's; its set is checked when handed in
            resolve_member(m, eps, cfg_eot)
        name = member_name(m)
        if name in seen:
            raise UserError(f"attack ensemble: members[{i}] repeats member {name!r}; give it a distinct 'name'")
        seen.add(name)
        out.append({**m, "name": name})
    return out


@torch.no_grad()
def source_margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int, batch_size: int,
                  device) -> torch.Tensor:
    """The source's margin ``z_y - max_{j != y} z_j`` of the logits summed over ``draws`` passes
    (< 0: misclassified)."""
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        z = sum(model(xb) for _ in range(max(1, draws))).float()
        zy = z.gather(1, yb[:, None]).squeeze(1)
        out.append((zy - z.scatter(1, yb[:, None], float("-inf")).max(1).values).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def source_predict(model: nn.Module, x: torch.Tensor, draws: int, batch_size: int, device) -> torch.Tensor:
    """The source's predicted classes (logits summed over ``draws`` forward passes)."""
    with torch.no_grad():
        out = [sum(model(x[i:i + batch_size].to(device)) for _ in range(max(1, draws))).argmax(1).cpu()
               for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def craft_ensemble(model: nn.Module, x: torch.Tensor, y: torch.Tensor, p: dict, eps: float, *,
                   craft_member: Callable, eot_samples: int = 1, batch_size: int = 64, seed: int = 0,
                   sets: dict | None = None, device: torch.device | str = "cpu") -> tuple[torch.Tensor, dict]:
    """Craft the per-sample worst case of ``p["members"]``; returns ``(x_adv, info)`` like
    :func:`spkrobust.attacks.registry.craft`, with ``info["ensemble"]`` the per-member record.
    ``craft_member(model, x, y, spec, eps, eot_samples=, batch_size=, seed=, device=)`` crafts one member;
    ``sets``: attack name -> ``(x_adv [n, ...] on the same images, meta)`` for the ``{set: ...}`` members."""
    t0 = time.time()
    model.eval()
    x, y = x.float(), y.long()
    n = len(x)
    draws = max(int(p["judge_draws"]), int(p["eot_samples"])) if is_stochastic(model) else 1
    torch.manual_seed(int(seed))
    best = source_margin(model, x, y, draws, batch_size, device)  # margin of the kept candidate
    clean_ok = best >= 0
    x_adv = x.clone()
    attempted = torch.zeros(len(p["members"]), n, dtype=torch.bool)
    broken = torch.zeros_like(attempted)
    infos = []
    for i, m in enumerate(p["members"]):
        # the first member attacks every image (a stochastic source's "wrong" may be luck)
        idx = torch.nonzero((best >= 0) if (p["stop_early"] and i > 0) else torch.ones(n, dtype=torch.bool)).flatten()
        if len(idx) == 0:
            infos.append({"name": m["name"], "skipped": True})
            continue
        if "set" in m:
            xa, info = _reused(m, sets, x, eps, idx)
        else:
            spec = {k: v for k, v in m.items() if k != "name"}
            xa, info = craft_member(model, x[idx], y[idx], spec, eps, eot_samples=eot_samples, batch_size=batch_size,
                                    seed=derive_seed(seed, "member", i), device=device)
        margin = source_margin(model, xa, y[idx], draws, batch_size, device)
        b = margin < 0
        attempted[i, idx] = True
        broken[i, idx] = b
        was_robust = best[idx] >= 0
        better = margin < best[idx]  # keep the candidate the source is least sure of
        x_adv[idx[better]] = xa[better]
        best[idx[better]] = margin[better]
        infos.append({"name": m["name"], "attempted": len(idx), "broke": int(b.sum()),
                      "first": int((b & was_robust).sum()), "zero_grad_frac": info.get("zero_grad_frac"),
                      "grad": info.get("grad"), "time_s": info.get("time_s"),
                      **({"set": m["set"], "set_seed": info["seed"]} if "set" in m else {})})
    verify_adv(x, x_adv, eps)
    zero = [i["zero_grad_frac"] for i in infos if i.get("zero_grad_frac") is not None]
    record = encode_record(
        n=n, stop_early=p["stop_early"], judge_draws=draws, members=p["members"],
        clean_wrong=(~clean_ok).numpy(), attempted=attempted.numpy(), broken=broken.numpy(),
        robust_on_source=float((best >= 0).float().mean()) if n else None, member_info=infos)
    reused_s = sum(float(i.get("time_s") or 0.0) for i in infos if "set" in i)
    info = {"attack_type": "ensemble", "attack_params": {**p}, "eot_samples": int(p["eot_samples"])
            if is_stochastic(model) else 1, "zero_grad_frac": max(zero) if zero else None,
            "time_s": round(time.time() - t0 + reused_s, 3), "grad": None, "ensemble": record}
    return x_adv, info


def _reused(m: dict, sets: dict | None, x: torch.Tensor, eps: float, idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """A ``{set: name}`` member's candidates on the images ``idx``, and its info from the set's meta."""
    name = m["set"]
    if not sets or name not in sets:
        raise UserError(f"attack ensemble: member {m['name']!r} reuses the set of attack {name!r}, "
                        f"which was not handed in (spkrobust craft --set {name}=PATH)")
    xa, meta = sets[name][0].float(), sets[name][1]
    verify_adv(x, xa, eps)  # the same images, inside this eps-ball
    return xa[idx], {"zero_grad_frac": meta.get("zero_grad_frac"), "grad": meta.get("grad_mode"),
                             "time_s": meta.get("time_s"), "seed": meta.get("seed")}

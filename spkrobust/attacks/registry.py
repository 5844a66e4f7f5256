"""Adversarial attacks in pixel space (L∞), by name, with honest bookkeeping.

Attack types (``{type: ..., params...}`` in the config; eps/alpha in pixel units, numbers or ``"a/b"``):

========  =========================================================================================
fgsm      one signed-gradient step of eps (own code: the gradient is shared by every eps, see
          :func:`fgsm_gradient` / :func:`fgsm_from_grad`; equal to ``torchattacks.FGSM``)
rfgsm     Tramèr et al.: ``x' = x + alpha·sign(N(0, I))``, then a step of ``eps - alpha`` along the
          gradient sign at ``x'`` (``alpha``: pixel units, default ``eps/2``, capped at eps; with
          the default it equals ``torchattacks.RFGSM(steps=1, alpha=eps/2)``)
pgd       ``torchattacks.PGD`` (``steps`` 7, ``alpha`` 2/255 — or relative: ``"0.25*eps"`` —,
          ``random_start`` true); with
          ``eot_samples > 1`` on a stochastic source ``torchattacks.EOTPGD``
eotpgd    ``torchattacks.EOTPGD``: PGD whose every step sums gradients of ``eot_samples`` draws
          (default ``max(4, cfg eot_samples)``)
apgd      ``torchattacks.APGD`` (L∞, ``steps`` 10, ``n_restarts`` 1, ``loss`` ce or dlr, ``rho`` 0.75,
          its own EOT = ``eot_samples``)
apgdt     ``torchattacks.APGDT``: targeted APGD-DLR against the ``target_classes`` (default 9) most
          likely wrong classes in turn (same parameters as apgd, no ``loss``)
sapgd     SA-PGD (Wang et al., arXiv 2512.22522): own loop, :mod:`spkrobust.attacks.sapgd` (``steps``
          100, ``n_restarts`` 1, ``loss`` ce or dlr, EOT = ``eot_samples``)
ensemble  a per-sample worst case over ``members`` (a list of attack specs, any type × ``grad``):
          see :mod:`spkrobust.attacks.ensemble`
square    ``torchattacks.Square`` (query-based, no gradient; ``n_queries`` 1000, ``p_init`` 0.8,
          ``loss`` margin)
noise     random-sign noise of the same eps (the baseline every attack must beat)
========  =========================================================================================

Every gradient attack (sapgd too) takes ``grad: {mode, ...}``, the gradient estimator for an SNN source
(:mod:`spkrobust.nets.estimators`: bptt with an attack-time surrogate, ste, bptr, rga, act, hart, assg,
pdsg, mix); without it the config's ``grad_mode`` (bptt / rate) applies. ANN sources ignore it.  A hart
``gamma`` or assg ``a`` list is searched per source (:mod:`spkrobust.attacks.search`; ``info["grad_search"]``).
Stateful estimators (assg) are restarted by :func:`spkrobust.attacks.base.begin_run` at every run and
restart of every attack loop (APGD/APGDT: each ``attack_single_run``).

Gradients through SNNs: the spkrobust SNNs give input gradients in ``eval()`` mode (surrogate in
every backward pass, straight-through Poisson encoder), so the attacks run the source in ``eval()``
(as torchattacks does) — dropout is off, gradients flow. A source whose output does not depend
differentiably on its input raises an error instead of silently producing no perturbation.

EOT: on a stochastic source (``model.stochastic``, Poisson input) every gradient is the sum of the
input gradients of ``eot_samples`` independent forward/backward passes (each pass draws new
spikes). On a deterministic source EOT is pointless and the effective count is 1 (recorded).

``zero_grad_frac``: the fraction of inputs whose input gradient is exactly zero everywhere, on the
first gradient the attack computes (fgsm: at x; rfgsm: at x'; pgd/eotpgd/sapgd: at the random start, the
sum (sapgd: mean) over the first step's EOT draws). APGD attacks only the inputs the source still classifies
correctly, so for it the fraction is measured by one extra (EOT) gradient at the clean input.
Gradient-free attacks (square, noise) record ``None``.

Each type is one crafting function ``(model, p, x, y, eps, eot, seed) -> (x_adv, first gradient or
None)`` in :data:`ATTACKS` (its parameters and defaults in the config schema and
:func:`spkrobust.config.schema.attack_defaults`); adding an attack is one function and one entry.
What the attacks share lives in :mod:`spkrobust.attacks.base`.

Every adversarial set is verified before it is written: ``‖x_adv − x‖∞ ≤ eps + 1e-6`` and all values
in [0, 1] and finite; a violation raises :class:`AdversarialSetError`.
"""
from __future__ import annotations

import sys
import time

import torch
import torch.nn as nn

from spkrobust.attacks.base import (BALL_TOL, AdversarialSetError, GradProbe, NoGradientError, batched, begin_run,
                                    derive_seed, input_grad, is_stochastic, project, set_grad_mode,
                                    verify_adv, zero_grad_mask)
from spkrobust.attacks.sapgd import sapgd
from spkrobust.attacks.ensemble import craft_ensemble, resolve_members
from spkrobust.attacks.search import listed, search_value
from spkrobust.config.expand import parse_alpha, parse_eps
from spkrobust.config.schema import attack_defaults, check_value
from spkrobust.config.vocab import EOTPGD_MIN_SAMPLES, GRADIENT_TYPES
from spkrobust.errors import UserError
from spkrobust.nets.estimators import parse_grad, with_estimator

__all__ = ["ATTACKS", "BALL_TOL", "EOTPGD_MIN_SAMPLES", "GRADIENT_TYPES", "AdversarialSetError", "NoGradientError",
           "craft", "derive_seed", "fgsm_from_grad", "fgsm_gradient", "input_grad", "is_stochastic", "resolve_attack",
           "set_grad_mode", "verify_adv", "zero_grad_mask"]


# ---- the attacks: one crafting function per type -------------------------------------------------

def fgsm_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eot_samples: int = 1,
                  batch_size: int = 64, device: torch.device | str = "cpu") -> torch.Tensor:
    """The sign of the input gradient at the clean inputs, as int8 ``[N, C, H, W]`` (0 where the
    gradient is exactly zero). One gradient serves FGSM at every eps (:func:`fgsm_from_grad`)."""
    model.eval()
    k = int(eot_samples) if is_stochastic(model) else 1
    out = torch.empty(x.shape, dtype=torch.int8)
    for s in batched(len(x), batch_size):
        begin_run(model, k)
        g = input_grad(model, x[s].to(device), y[s].to(device), k)
        out[s] = g.sign().to(torch.int8).cpu()
    return out


def fgsm_from_grad(x: torch.Tensor, grad: torch.Tensor, eps: float) -> torch.Tensor:
    """FGSM from a stored gradient (or its sign): ``clip(x + eps·sign(grad), x ± eps, [0, 1])``."""
    if grad.shape != x.shape:
        raise UserError(f"gradient shape {tuple(grad.shape)} does not match the inputs {tuple(x.shape)}")
    s = grad.to(device=x.device, dtype=x.dtype).sign()
    return project(x, x + eps * s, eps)



def _noise(model, p, x, y, eps, eot, seed):
    s = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1
    return project(x, x + eps * s, eps), None


def _fgsm(model, p, x, y, eps, eot, seed):
    begin_run(model, eot)
    g = input_grad(model, x, y, eot)
    return fgsm_from_grad(x, g, eps), g


def _rfgsm(model, p, x, y, eps, eot, seed):
    a = p["alpha"]
    x1 = torch.clamp(x + a * torch.randn_like(x).sign(), 0.0, 1.0)
    begin_run(model, eot)
    g = input_grad(model, x1, y, eot)
    return project(x, x1 + (eps - a) * g.sign(), eps), g


def _pgd(model, p, x, y, eps, eot, seed):  # pgd and eotpgd
    import torchattacks

    probe = GradProbe(model, capture=eot)
    if eot > 1:
        atk = torchattacks.EOTPGD(probe, eps=eps, alpha=p["alpha"], steps=p["steps"], eot_iter=eot,
                                  random_start=p["random_start"])
    else:
        atk = torchattacks.PGD(probe, eps=eps, alpha=p["alpha"], steps=p["steps"], random_start=p["random_start"])
    begin_run(model, eot)  # one run: torchattacks' PGD has no restarts
    x_adv = atk(x, y)
    return x_adv, probe.first_grad()


def _per_run(atk, model, eot):
    """Make a torchattacks APGD/APGDT call :func:`begin_run` at each of its runs (restarts, target classes)."""
    single_run = atk.attack_single_run

    def run(*args, **kwargs):
        begin_run(model, eot)
        return single_run(*args, **kwargs)

    atk.attack_single_run = run
    return atk


def _record_grad(model, x, y, eot):
    """The (EOT) gradient at the clean inputs, for the zero-gradient record of APGD/APGDT."""
    begin_run(model, eot)
    return input_grad(model, x, y, eot)


def _apgd(model, p, x, y, eps, eot, seed):
    import torchattacks

    g = _record_grad(model, x, y, eot)
    probe = GradProbe(model, capture=0)
    atk = torchattacks.APGD(probe, norm="Linf", eps=eps, steps=p["steps"], n_restarts=p["n_restarts"],
                            seed=seed, loss=p["loss"], eot_iter=eot, rho=p["rho"])
    return _per_run(atk, model, eot)(x, y), g


def _apgdt(model, p, x, y, eps, eot, seed):
    import torchattacks

    g = _record_grad(model, x, y, eot)
    n_classes = int((getattr(model, "meta", None) or {}).get("num_classes", 10))
    atk = torchattacks.APGDT(GradProbe(model, capture=0), norm="Linf", eps=eps, steps=p["steps"],
                             n_restarts=p["n_restarts"], seed=seed, eot_iter=eot, rho=p["rho"], n_classes=n_classes)
    atk.n_target_classes = max(1, min(p["target_classes"], n_classes - 1))
    return _per_run(atk, model, eot)(x, y), g


def _square(model, p, x, y, eps, eot, seed):
    import torchattacks

    atk = torchattacks.Square(model, norm="Linf", eps=eps, n_queries=p["n_queries"], n_restarts=p["n_restarts"],
                              p_init=p["p_init"], loss=p["loss"], seed=seed)
    with torch.no_grad():  # query-based: no graphs needed
        return atk(x, y), None


def _sapgd(model, p, x, y, eps, eot, seed):
    return sapgd(model, x, y, eps, steps=p["steps"], n_restarts=p["n_restarts"], loss=p["loss"],
                 eot_samples=eot, seed=seed)


# type -> crafting function (the ensemble is crafted above them, by craft_ensemble)
ATTACKS = {"fgsm": _fgsm, "rfgsm": _rfgsm, "pgd": _pgd, "eotpgd": _pgd, "apgd": _apgd, "apgdt": _apgdt,
           "sapgd": _sapgd, "square": _square, "noise": _noise}


def _craft_batch(model, atype, p, x, y, eps, eot, seed):
    """One batch -> (x_adv, first_grad or None)."""
    if eps == 0.0:  # every attack is the identity; still measure the gradient for the record
        if atype not in GRADIENT_TYPES:
            return x.clone(), None
        begin_run(model, eot)
        return x.clone(), input_grad(model, x, y, eot)
    return ATTACKS[atype](model, p, x, y, eps, eot, seed)


# ---- resolving and crafting ------------------------------------------------------------------------

def resolve_attack(attack_cfg: dict, eps: float, cfg_eot: int = 1) -> tuple[str, dict]:
    """Check an attack spec ``{type, params...}`` against the config schema; return ``(type, params)``
    with defaults filled and pixel values parsed. A bad spec raises a one-line :class:`UserError`."""
    spec = dict(attack_cfg) if isinstance(attack_cfg, dict) else attack_cfg
    if isinstance(spec, dict):
        spec.pop("name", None)
    check_value(spec, "attack", "attack")  # the config schema: type, parameters, ranges
    atype = spec.pop("type")
    defaults = attack_defaults(atype)
    p = {**defaults, **spec}
    if "eot_samples" in p:
        k = p["eot_samples"]
        if k is None:
            k = max(EOTPGD_MIN_SAMPLES, cfg_eot) if atype == "eotpgd" else cfg_eot
        p["eot_samples"] = int(k)
    if atype == "rfgsm":
        a = eps / 2 if p["alpha"] is None else parse_eps(p["alpha"], "rfgsm.alpha")
        p["alpha"] = min(a, eps)
    if atype in ("pgd", "eotpgd"):
        p["alpha"] = parse_alpha(p["alpha"], eps, f"{atype}.alpha")
        p["random_start"] = bool(p["random_start"])
    if p.get("grad") is not None:
        p["grad"] = parse_grad(p["grad"], f"attack {atype}: grad").as_dict()
    if atype == "ensemble":
        p["members"] = resolve_members(p["members"], eps, cfg_eot, resolve_attack)
        p["stop_early"] = bool(p["stop_early"])
    return atype, p



def craft(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack_cfg: dict, eps: float, *,
          eot_samples: int = 1, batch_size: int = 64, seed: int = 0, grad: torch.Tensor | None = None,
          sets: dict | None = None, device: torch.device | str = "cpu") -> tuple[torch.Tensor, dict]:
    """Craft adversarial examples of ``x`` (pixels in [0, 1], CPU) against ``model``.

    Returns ``(x_adv, info)``: ``x_adv`` float32 on the CPU, verified in the eps-ball and [0, 1];
    ``info`` = ``{attack_params (resolved), eot_samples (effective), zero_grad_frac, time_s,
    gradient_calls}``. ``grad`` (from :func:`fgsm_gradient`) makes FGSM reuse a stored gradient;
    ``sets`` (attack name -> ``(x_adv, meta)`` on the same images) are an ensemble's ``{set: ...}`` members.
    Deterministic given ``seed`` (the global torch RNG is seeded; Poisson draws use it too).
    """
    eps = float(eps)
    atype, p = resolve_attack(attack_cfg, eps, cfg_eot=int(eot_samples))
    if atype == "ensemble":
        return craft_ensemble(model, x, y, p, eps, craft_member=craft, eot_samples=int(eot_samples), batch_size=batch_size,
                              seed=seed, sets=sets, device=device)
    if listed(p) is not None:  # HART's γ / ASSG's a searched per source, then the attack with the chosen value
        chosen, rec = search_value(model, x.float(), y, attack_cfg, eps, craft=craft, seed=seed, device=device,
                                   eot_samples=eot_samples, batch_size=batch_size)
        x_adv, info = craft(model, x, y, chosen, eps, eot_samples=eot_samples, batch_size=batch_size, seed=seed,
                            device=device)
        return x_adv, {**info, "grad_search": rec}
    grad_spec = None
    if p.get("grad") is not None:
        model, grad_spec = with_estimator(model, p["grad"])
    stochastic = is_stochastic(model)
    eot = p.get("eot_samples", 1) if stochastic else 1
    model.eval()
    t0 = time.time()
    torch.manual_seed(int(seed))
    n = len(x)
    x = x.float()
    if grad is not None and atype == "fgsm":
        x_adv = fgsm_from_grad(x, grad, eps)
        zmask = zero_grad_mask(grad)
    else:
        chunks, zchunks = [], []
        for b, s in enumerate(batched(n, batch_size)):
            xb, yb = x[s].to(device), y[s].to(device)
            xa, g = _craft_batch(model, atype, p, xb, yb, eps, eot, derive_seed(seed, b))
            chunks.append(xa.detach().float().cpu())
            if g is not None:
                zchunks.append(zero_grad_mask(g).cpu())
        x_adv = torch.cat(chunks) if chunks else x.clone()
        zmask = torch.cat(zchunks) if zchunks else None
    model.eval()
    verify_adv(x, x_adv, eps)
    if atype in ("pgd", "eotpgd") and eps > 0 and p["steps"] * p["alpha"] < eps:
        print(f"warning: {atype} with {p['steps']} steps of {p['alpha']:.4g} cannot reach the eps-ball boundary "
              f"(eps {eps:.4g}); use more steps or alpha relative to eps, e.g. '0.25*eps'", file=sys.stderr)
    info = {
        "attack_type": atype,
        "attack_params": {k: v for k, v in p.items()},
        "eot_samples": int(eot) if atype in GRADIENT_TYPES else None,
        "zero_grad_frac": (float(zmask.float().mean()) if zmask is not None and len(zmask) else None),
        "time_s": round(time.time() - t0, 3),
        "grad": grad_spec.label() if grad_spec is not None else None,
    }
    if atype not in GRADIENT_TYPES:
        info["zero_grad_frac"] = None
    return x_adv, info

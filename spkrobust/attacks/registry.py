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

Every gradient attack (sapgd too) takes ``grad: {mode, surrogate, width, gamma}``, the gradient estimator for an
SNN source (:mod:`spkrobust.nets.estimators`: bptt with an attack-time surrogate, ste, bptr, rga, act,
hart); without it the config's ``grad_mode`` (bptt / rate) applies. ANN sources ignore it.

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

Every adversarial set is verified before it is written: ``‖x_adv − x‖∞ ≤ eps + 1e-6`` and all values
in [0, 1] and finite; a violation raises :class:`AdversarialSetError`.
"""
from __future__ import annotations

import hashlib
import sys
import time
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from spkrobust.config.expand import parse_alpha, parse_eps
from spkrobust.errors import UserError
from spkrobust.config.vocab import ATTACK_DEFAULTS, EOTPGD_MIN_SAMPLES, GRADIENT_TYPES

BALL_TOL = 1e-6



class AdversarialSetError(RuntimeError):
    """An adversarial set leaves the eps-ball or [0, 1]: a bug, never written to disk."""


class NoGradientError(UserError):
    """The source model gives no input gradient (its output is not differentiable w.r.t. the input)."""


# ---- small helpers ------------------------------------------------------------------------------

def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from any printable parts (base seed, names, replica, ...)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def is_stochastic(model: nn.Module) -> bool:
    return bool(getattr(model, "stochastic", False))


def set_grad_mode(model: nn.Module, grad_mode: str | None) -> str | None:
    """Apply ``grad_mode`` (``bptt``/``rate``) on an SNN source; returns what was applied (None for ANNs)."""
    kind = (getattr(model, "meta", None) or {}).get("kind")
    if grad_mode is None or kind == "ann":
        return None if kind == "ann" else grad_mode
    if grad_mode not in ("bptt", "rate"):
        raise UserError(f"grad_mode: {grad_mode!r} is not one of bptt, rate")
    if hasattr(model, "set_grad_mode"):
        model.set_grad_mode(grad_mode)
    elif grad_mode != "bptt":
        raise UserError(f"grad_mode {grad_mode!r} requested but the source model has no set_grad_mode()")
    return grad_mode


def zero_grad_mask(grad: torch.Tensor) -> torch.Tensor:
    """Per input: True where the gradient (or its sign) is exactly zero everywhere."""
    return grad.reshape(grad.shape[0], -1).ne(0).sum(1).eq(0)


def resolve_attack(attack_cfg: dict, eps: float, cfg_eot: int = 1) -> tuple[str, dict]:
    """Check an attack spec ``{type, params...}`` against the config schema; return ``(type, params)``
    with defaults filled and pixel values parsed. A bad spec raises a one-line :class:`UserError`."""
    from spkrobust.config.schema import check_value

    spec = dict(attack_cfg) if isinstance(attack_cfg, dict) else attack_cfg
    if isinstance(spec, dict):
        spec.pop("name", None)
    check_value(spec, "attack", "attack")  # the config schema: type, parameters, ranges
    atype = spec.pop("type")
    defaults = ATTACK_DEFAULTS[atype]
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
        from spkrobust.nets.estimators import parse_grad

        p["grad"] = parse_grad(p["grad"], f"attack {atype}: grad").as_dict()
    if atype == "ensemble":
        from spkrobust.attacks.ensemble import resolve_members

        p["members"] = resolve_members(p["members"], eps, cfg_eot)
        p["stop_early"] = bool(p["stop_early"])
    return atype, p


# ---- gradients ----------------------------------------------------------------------------------

def _logits_with_grad(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not out.requires_grad:
        raise NoGradientError(
            "the source model's output carries no gradient w.r.t. its input (e.g. SpikingJelly neurons "
            "in eval() mode or a non-differentiable encoder): gradient attacks would silently do nothing")
    return out


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eot_samples: int = 1) -> torch.Tensor:
    """Input gradient of the summed cross-entropy, summed over ``eot_samples`` forward/backward
    passes (independent Poisson draws on a stochastic model). Float tensor shaped like ``x``."""
    grad = torch.zeros_like(x)
    for _ in range(max(1, int(eot_samples))):
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(_logits_with_grad(model, xg), y, reduction="sum")
            (g,) = torch.autograd.grad(loss, xg, allow_unused=True)
        if g is None:
            raise NoGradientError("the source model's loss does not depend on its input: no input gradient")
        grad += g
    return grad


def _batched(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        yield slice(i, min(n, i + batch_size))


def fgsm_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eot_samples: int = 1,
                  batch_size: int = 64, device: torch.device | str = "cpu") -> torch.Tensor:
    """The sign of the input gradient at the clean inputs, as int8 ``[N, C, H, W]`` (0 where the
    gradient is exactly zero). One gradient serves FGSM at every eps (:func:`fgsm_from_grad`)."""
    model.eval()
    k = int(eot_samples) if is_stochastic(model) else 1
    out = torch.empty(x.shape, dtype=torch.int8)
    for s in _batched(len(x), batch_size):
        g = input_grad(model, x[s].to(device), y[s].to(device), k)
        out[s] = g.sign().to(torch.int8).cpu()
    return out


def fgsm_from_grad(x: torch.Tensor, grad: torch.Tensor, eps: float) -> torch.Tensor:
    """FGSM from a stored gradient (or its sign): ``clip(x + eps·sign(grad), x ± eps, [0, 1])``."""
    if grad.shape != x.shape:
        raise UserError(f"gradient shape {tuple(grad.shape)} does not match the inputs {tuple(x.shape)}")
    s = grad.to(device=x.device, dtype=x.dtype).sign()
    return _project(x, x + eps * s, eps)


def _project(x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0).detach()


class _GradProbe(nn.Module):
    """Wraps a model for torchattacks: checks that gradients flow and keeps the input gradients of
    the first ``capture`` gradient-carrying forward passes (the attack's first step)."""

    def __init__(self, model: nn.Module, capture: int):
        super().__init__()
        self.model = model
        self.train(model.training)  # torchattacks restores train() after the attack if the wrapper was training
        self.capture = int(capture)
        self.grad_calls = 0
        self.captured: dict[int, torch.Tensor] = {}

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad_calls += 1
            idx = self.grad_calls
            if idx <= self.capture:
                x = x.view_as(x)  # a graph-local alias: the hook fires for this pass only
                x.register_hook(lambda g, i=idx: self.captured.__setitem__(i, g.detach().clone()))
            return _logits_with_grad(self.model, x)
        return self.model(x)

    def first_grad(self) -> torch.Tensor | None:
        if not self.captured:
            return None
        return sum(self.captured[i] for i in sorted(self.captured))


# ---- crafting -----------------------------------------------------------------------------------

def _craft_batch(model, atype, p, x, y, eps, eot, seed, stochastic):
    """One batch → (x_adv, first_grad or None)."""
    import torchattacks

    if eps == 0.0:  # every attack is the identity; still measure the gradient for the record
        g = input_grad(model, x, y, eot) if atype in GRADIENT_TYPES else None
        return x.clone(), g
    if atype == "noise":
        s = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1
        return _project(x, x + eps * s, eps), None
    if atype == "fgsm":
        g = input_grad(model, x, y, eot)
        return fgsm_from_grad(x, g, eps), g
    if atype == "rfgsm":
        a = p["alpha"]
        x1 = torch.clamp(x + a * torch.randn_like(x).sign(), 0.0, 1.0)
        g = input_grad(model, x1, y, eot)
        return _project(x, x1 + (eps - a) * g.sign(), eps), g
    if atype in ("pgd", "eotpgd"):
        probe = _GradProbe(model, capture=eot)
        if eot > 1:
            atk = torchattacks.EOTPGD(probe, eps=eps, alpha=p["alpha"], steps=p["steps"], eot_iter=eot,
                                      random_start=p["random_start"])
        else:
            atk = torchattacks.PGD(probe, eps=eps, alpha=p["alpha"], steps=p["steps"],
                                   random_start=p["random_start"])
        x_adv = atk(x, y)
        return x_adv, probe.first_grad()
    if atype == "apgd":
        g = input_grad(model, x, y, eot)
        probe = _GradProbe(model, capture=0)
        atk = torchattacks.APGD(probe, norm="Linf", eps=eps, steps=p["steps"], n_restarts=p["n_restarts"],
                                seed=seed, loss=p["loss"], eot_iter=eot, rho=p["rho"])
        return atk(x, y), g
    if atype == "apgdt":
        g = input_grad(model, x, y, eot)
        n_classes = int((getattr(model, "meta", None) or {}).get("num_classes", 10))
        atk = torchattacks.APGDT(_GradProbe(model, capture=0), norm="Linf", eps=eps, steps=p["steps"],
                                 n_restarts=p["n_restarts"], seed=seed, eot_iter=eot, rho=p["rho"], n_classes=n_classes)
        atk.n_target_classes = max(1, min(p["target_classes"], n_classes - 1))
        return atk(x, y), g
    if atype == "sapgd":
        from spkrobust.attacks.sapgd import sapgd

        return sapgd(model, x, y, eps, steps=p["steps"], n_restarts=p["n_restarts"], loss=p["loss"],
                     eot_samples=eot, seed=seed)
    if atype == "square":
        atk = torchattacks.Square(model, norm="Linf", eps=eps, n_queries=p["n_queries"],
                                  n_restarts=p["n_restarts"], p_init=p["p_init"], loss=p["loss"], seed=seed)
        with torch.no_grad():  # query-based: no graphs needed
            return atk(x, y), None
    raise UserError(f"attack type {atype!r} unknown")  # pragma: no cover (resolve_attack checks)


def craft(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack_cfg: dict, eps: float, *,
          eot_samples: int = 1, batch_size: int = 64, seed: int = 0, grad: torch.Tensor | None = None,
          device: torch.device | str = "cpu") -> tuple[torch.Tensor, dict]:
    """Craft adversarial examples of ``x`` (pixels in [0, 1], CPU) against ``model``.

    Returns ``(x_adv, info)``: ``x_adv`` float32 on the CPU, verified in the eps-ball and [0, 1];
    ``info`` = ``{attack_params (resolved), eot_samples (effective), zero_grad_frac, time_s,
    gradient_calls}``. ``grad`` (from :func:`fgsm_gradient`) makes FGSM reuse a stored gradient.
    Deterministic given ``seed`` (the global torch RNG is seeded; Poisson draws use it too).
    """
    eps = float(eps)
    atype, p = resolve_attack(attack_cfg, eps, cfg_eot=int(eot_samples))
    if atype == "ensemble":
        from spkrobust.attacks.ensemble import craft_ensemble

        return craft_ensemble(model, x, y, p, eps, eot_samples=int(eot_samples), batch_size=batch_size,
                              seed=seed, device=device)
    grad_spec = None
    if p.get("grad") is not None:
        from spkrobust.nets.estimators import with_estimator

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
        for b, s in enumerate(_batched(n, batch_size)):
            xb, yb = x[s].to(device), y[s].to(device)
            xa, g = _craft_batch(model, atype, p, xb, yb, eps, eot, derive_seed(seed, b), stochastic)
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


def verify_adv(x: torch.Tensor, x_adv: torch.Tensor, eps: float, tol: float = BALL_TOL) -> None:
    """Raise :class:`AdversarialSetError` unless ``x_adv`` is finite, in [0, 1] and within eps (L∞)."""
    if x_adv.shape != x.shape:
        raise AdversarialSetError(f"adversarial set shape {tuple(x_adv.shape)} != inputs {tuple(x.shape)}")
    xa = x_adv.detach().float().cpu()
    if not torch.isfinite(xa).all():
        raise AdversarialSetError("adversarial set contains NaN/inf values")
    lo, hi = float(xa.min()) if xa.numel() else 0.0, float(xa.max()) if xa.numel() else 0.0
    if lo < 0.0 or hi > 1.0:
        raise AdversarialSetError(f"adversarial set leaves [0, 1]: min {lo:.6g}, max {hi:.6g}")
    dist = float((xa - x.detach().float().cpu()).abs().max()) if xa.numel() else 0.0
    if dist > eps + tol:
        raise AdversarialSetError(f"adversarial set leaves the eps-ball: max |x_adv - x| = {dist:.8g} > "
                                  f"eps {eps:.8g} + {tol:g}")

"""SA-PGD: the stability-adaptive PGD of Wang et al. for spiking sources, L∞.

Paper: Wang et al., "Towards Reliable Evaluation of Adversarial Robustness for Spiking Neural
Networks", arXiv 2512.22522.  Code: github.com/craree/Towards-Reliable-Evaluation-of-Adversarial-
Robustness-for-Spiking-Neural-Networks, ``attack.py`` (classes ``SAPGD``, ``SAPGD_poi``).  torchattacks has
no SA-PGD, so this is its own loop; the gradient is whatever the source's backward pass gives, so it
runs with every estimator of :mod:`spkrobust.nets.estimators` (``grad:``) and with EOT.

One run on a batch, following the reference's update (N = ``steps``):

- random start: ``x0 = clip(x + eps·t/max|t|, 0, 1)`` with ``t ~ U(-1, 1)`` per pixel and the max taken per
  image (so the largest coordinate sits on the ball's edge);
- at every iterate the loss gradient ``g`` (CE or DLR, summed over the batch; on a stochastic source the
  mean over ``eot_samples`` independent forward/backward passes) gives, per image,
  ``m = 0.5·m + g/mean|g|`` and ``v = 0.8·v + g²/mean(g²)`` (first step: ``m = g/mean|g|``,
  ``v = g²/mean(g²)``; no bias correction), and the step ``δ = clip(η·m/√v, −η, η)``, then projection
  on the eps-ball ∩ [0, 1];
- ``η`` starts at eps and halves after iteration ``k₁ = ⌊0.22 N⌋``, then after ``k₂ = max(k₁ − ⌊0.03 N⌋,
  ⌊0.06 N⌋)`` further iterations, and so on (each floor at least 1): :func:`halving_iterations`;
- an image counts as fooled at an iterate when the source misclassifies it there (a stochastic source:
  the logits averaged over that iterate's EOT draws); the run returns each image's *last* fooling iterate.

``n_restarts``: every later restart attacks only the images no earlier restart fooled (the reference's
``perturb``), from a new random start.

Where this departs from the reference, and why:

- every image is attacked, also those the source misclassifies before the attack (the reference skips
  them on deterministic sources), so the first gradient of every image is recorded (``zero_grad_frac``);
- an image never fooled is returned at its highest-loss iterate (the reference returns the clean image):
  on the source it is equally unbroken, and a transfer or stochastic target sees the strongest candidate;
- ``g/mean|g|`` and ``g²/mean(g²)`` are 0 for an image whose gradient is exactly zero (the reference
  divides 0 by 0 and its iterate becomes NaN);
- the fooling judgement on a stochastic source averages the logits of the EOT draws (the reference uses
  the last draw alone); the ensemble (:mod:`spkrobust.attacks.ensemble`) judges the result again on
  several fresh draws, as the paper asks for Poisson inputs;
- no gradient is taken at the final iterate (only its forward pass is needed).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from spkrobust.attacks.base import NoGradientError, _logits_with_grad, begin_run

M_DECAY = 0.5  # the reference's first-moment decay
V_DECAY = 0.8  # the reference's second-moment decay


def halving_iterations(steps: int) -> list[int]:
    """The 0-based iterations after which SA-PGD halves its step size (the reference's schedule:
    first after ``⌊0.22 N⌋`` iterations, the interval then shrinking by ``⌊0.03 N⌋`` down to ``⌊0.06 N⌋``)."""
    n = int(steps)
    k, k_min, decr = max(int(0.22 * n), 1), max(int(0.06 * n), 1), max(int(0.03 * n), 1)
    out, counter = [], 0
    for i in range(n):
        counter += 1
        if counter == k:
            out.append(i)
            counter = 0
            k = max(k - decr, k_min)
    return out


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Croce & Hein's difference-of-logits-ratio loss per sample (needs at least 3 classes)."""
    z, _ = logits.sort(dim=1)
    zy = logits.gather(1, y[:, None]).squeeze(1)
    top_is_y = (logits.argmax(1) == y).float()
    other = z[:, -2] * top_is_y + z[:, -1] * (1.0 - top_is_y)
    return -(zy - other) / (z[:, -1] - z[:, -3] + 1e-12)


def _loss_fn(loss: str):
    if loss == "ce":
        return lambda z, y: F.cross_entropy(z, y, reduction="none")
    if loss == "dlr":
        return dlr_loss
    raise ValueError(f"sapgd: unknown loss {loss!r}")  # pragma: no cover (the schema checks)


def _per_image_mean(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).mean(1).reshape((-1,) + (1,) * (t.dim() - 1))


def _normalised(t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.where(scale > 0, t / torch.where(scale > 0, scale, torch.ones_like(scale)), torch.zeros_like(t))


def sapgd_update(m: torch.Tensor | None, v: torch.Tensor | None, g: torch.Tensor, eta: float
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SA-PGD moment update: returns ``(m, v, δ)`` with ``δ = clip(η·m/√v, ±η)`` (``m``/``v`` None
    on the first step)."""
    gn = _normalised(g, _per_image_mean(g.abs()))
    g2 = g * g
    vn = _normalised(g2, _per_image_mean(g2))
    m = gn if m is None else M_DECAY * m + gn
    v = vn if v is None else V_DECAY * v + vn
    delta = torch.clamp(m / (v.sqrt() + 1e-12) * eta, -eta, eta)
    return m, v, delta


def random_start(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The reference's L∞ start: ``clip(x + eps·t/max|t|, 0, 1)``, ``t ~ U(-1, 1)``, max per image."""
    t = 2 * torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) - 1
    tmax = t.reshape(t.shape[0], -1).abs().max(1).values.clamp_min(1e-12)
    return torch.clamp(x + eps * t / tmax.reshape((-1,) + (1,) * (x.dim() - 1)), 0.0, 1.0)


def _evaluate(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, loss_fn, eot: int, need_grad: bool):
    """Mean over ``eot`` passes of the per-image loss, its input gradient (None unless ``need_grad``)
    and the mean logits."""
    grad, loss_sum, logits_sum = None, None, None
    for _ in range(max(1, int(eot))):
        if need_grad:
            xg = x_adv.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                z = _logits_with_grad(model, xg)
                li = loss_fn(z, y)
                (g,) = torch.autograd.grad(li.sum(), xg, allow_unused=True)
            if g is None:
                raise NoGradientError("the source model's loss does not depend on its input: no input gradient")
            grad = g if grad is None else grad + g
        else:
            with torch.no_grad():
                z = model(x_adv)
                li = loss_fn(z, y)
        z, li = z.detach().float(), li.detach().float()
        loss_sum = li if loss_sum is None else loss_sum + li
        logits_sum = z if logits_sum is None else logits_sum + z
    k = float(max(1, int(eot)))
    return loss_sum / k, (grad / k if grad is not None else None), logits_sum / k


def _project(x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0).detach()


def single_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, loss: str = "ce",
               eot: int = 1, generator: torch.Generator | None = None, trace: list | None = None):
    """One SA-PGD run → ``(x_fool, fooled, x_best, loss_best, first_grad)``: per image the last fooling
    iterate (the start where never fooled), whether it was fooled, the highest-loss iterate and its
    loss, and the gradient at the start.  ``trace`` (a list) receives ``(x_adv, loss, fooled_now)`` of
    the start and of every iterate."""
    loss_fn = _loss_fn(loss)
    x = x.detach()
    begin_run(model, eot)  # a stateful estimator (assg) starts afresh at every run and restart
    x_adv = random_start(x, eps, generator)
    li, g, z = _evaluate(model, x_adv, y, loss_fn, eot, need_grad=True)
    first_grad = g
    fooled = z.argmax(1) != y
    x_fool, x_best, loss_best = x_adv.clone(), x_adv.clone(), li.clone()
    if trace is not None:
        trace.append((x_adv.clone(), li.clone(), fooled.clone()))
    halve = set(halving_iterations(steps))
    eta, m, v = float(eps), None, None
    for i in range(int(steps)):
        m, v, delta = sapgd_update(m, v, g, eta)
        x_adv = _project(x, x_adv + delta, eps)
        li, g, z = _evaluate(model, x_adv, y, loss_fn, eot, need_grad=i < steps - 1)
        now = z.argmax(1) != y
        fooled |= now
        x_fool[now] = x_adv[now]
        up = li > loss_best
        x_best[up] = x_adv[up]
        loss_best[up] = li[up]
        if trace is not None:
            trace.append((x_adv.clone(), li.clone(), now.clone()))
        if i in halve:
            eta /= 2.0
    return x_fool, fooled, x_best, loss_best, first_grad


def sapgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 100,
          n_restarts: int = 1, loss: str = "ce", eot_samples: int = 1, seed: int = 0
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """SA-PGD on one batch (``x`` in [0, 1] on the model's device) → ``(x_adv, first_grad)``.

    ``x_adv``: per image the last fooling iterate of the first restart that fooled it, else the
    highest-loss iterate over all restarts; ``first_grad``: the (EOT-mean) gradient at the first random
    start, for the zero-gradient record.  The random starts come from a generator seeded with ``seed``;
    Poisson draws use the global RNG (seeded by :func:`spkrobust.attacks.registry.craft`)."""
    x, y = x.detach(), y.detach()
    if eps == 0.0:
        return x.clone(), None
    gen = torch.Generator(device=x.device)
    gen.manual_seed(int(seed))
    out = x.clone()
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    best_loss = torch.full((len(x),), float("-inf"), device=x.device)
    first = None
    for r in range(max(1, int(n_restarts))):
        idx = torch.nonzero(~done).flatten()
        if len(idx) == 0:
            break
        x_fool, fooled, x_best, loss_best, g = single_run(model, x[idx], y[idx], eps, steps, loss, eot_samples, gen)
        if r == 0:
            first = g
        up = ~fooled & (loss_best > best_loss[idx])
        out[idx[up]] = x_best[up]
        best_loss[idx[up]] = loss_best[up]
        out[idx[fooled]] = x_fool[fooled]
        done[idx[fooled]] = True
    return out, first

"""``grad: {mode: mix, members: [...], combine}``: several gradient estimators combined at every attack step.

Every member (an estimator of :mod:`spkrobust.nets.estimators`) backpropagates through the same
forward pass (a stochastic source's Poisson draw is replayed for each member from the same RNG
state), so the forward outputs stay the model's and the members differ only in their backward pass.

``combine: mean`` — the mean of the members' input gradients, as HART's MIXPGD averages the HART
and BPTT gradients (Hao et al., ICLR 2024).

``combine: maxloss`` — per image the member gradient whose step raises the loss most, as MDSE keeps
at every step the surrogate of highest loss (Neurocomputing 2025; its code was not read here, so the
scoring below is this module's own reading).  The loss at the current iterate is the same for every
member (the forward pass is shared), so "highest loss" must look ahead; the estimator does not know
the attack's step rule or loss, so it scores each member ``k`` by a look-ahead of the same forward
pass: ``⟨dL/dz, z(clip(x + h·sign g_k, 0, 1)) - z(x)⟩`` per image, with ``dL/dz`` the attack's own
loss gradient at the logits and ``h`` = :data:`LOOKAHEAD` (1/255, pixel units); the look-ahead
passes replay the step's Poisson draw.  Cost: per gradient, one forward/backward per member plus
one forward per member.
"""
from __future__ import annotations

import torch
import torch.nn as nn

LOOKAHEAD = 1.0 / 255.0


def _rng_state(x: torch.Tensor):
    return torch.get_rng_state(), (torch.cuda.get_rng_state(x.device) if x.is_cuda else None)


def _set_rng_state(x: torch.Tensor, state) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], x.device)


def _replayed(members, x: torch.Tensor, rng) -> list[torch.Tensor]:
    outs = []
    for m in members:
        _set_rng_state(x, rng)
        outs.append(m(x))
    for o in outs[1:]:
        if not torch.equal(o.detach(), outs[0].detach()):
            raise RuntimeError("grad mix: the members' forward passes differ; the source's forward is not "
                               "reproducible from the RNG state")
    return outs


class _MaxLoss(torch.autograd.Function):
    """Forward: the model's logits. Backward: per image the member gradient with the best look-ahead."""

    @staticmethod
    def forward(ctx, x, mixed):
        rng = _rng_state(x)
        with torch.enable_grad():
            xs = x.detach().requires_grad_(True)
            zs = _replayed(mixed.members, xs, rng)
        ctx.mixed, ctx.xs, ctx.zs, ctx.rng, ctx.rng_after = mixed, xs, zs, rng, _rng_state(x)
        return zs[0].detach().clone()

    @staticmethod
    def backward(ctx, grad_z):
        xs, zs, k = ctx.xs, ctx.zs, len(ctx.zs)
        with torch.enable_grad():
            gs = [torch.autograd.grad(z, xs, grad_z, retain_graph=i < k - 1)[0] for i, z in enumerate(zs)]
        z0 = zs[0].detach()
        scores = []
        with torch.no_grad():
            for g in gs:
                _set_rng_state(xs, ctx.rng)
                z1 = ctx.mixed.model(torch.clamp(xs.detach() + LOOKAHEAD * g.sign(), 0.0, 1.0))
                scores.append((grad_z * (z1 - z0)).sum(1))
        _set_rng_state(xs, ctx.rng_after)
        pick = torch.stack(scores).argmax(0)  # [B]
        ctx.mixed.picks.append(pick.detach().cpu())
        g = torch.stack(gs)[pick, torch.arange(len(pick), device=pick.device)]
        ctx.zs = ctx.xs = None
        return g, None


class MixedModel(nn.Module):
    """A source whose input gradient combines those of ``members`` (:class:`EstimatedModel` of the same model).

    ``picks`` (maxloss) collects, per gradient pass, the index of the member chosen for each image."""

    def __init__(self, model: nn.Module, spec, members: list[nn.Module]):
        super().__init__()
        self.model, self.spec = model, spec
        self.members = nn.ModuleList(members)
        self.meta = getattr(model, "meta", None)
        self.picks: list[torch.Tensor] = []
        self.train(model.training)

    @property
    def stochastic(self) -> bool:
        return bool(getattr(self.model, "stochastic", False))

    def begin_run(self, eot: int = 1) -> None:
        for m in self.members:
            m.begin_run(eot)

    def forward(self, x):
        if not (torch.is_grad_enabled() and x.requires_grad):
            return self.model(x)
        if self.spec.combine == "maxloss":
            return _MaxLoss.apply(x, self)
        outs = _replayed(self.members, x, _rng_state(x))
        return outs[0].detach() + sum(o - o.detach() for o in outs) / len(outs)

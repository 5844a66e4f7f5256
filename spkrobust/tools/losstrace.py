"""Loss against attack steps on one source: PGD (training surrogate) against SA-PGD with ASSG and friends.

``python -m spkrobust.tools.losstrace --model models/snn_bp/r1/model.pt --data data/fashion_mnist/data.pt``
prints, per gradient step, the mean cross-entropy of the source at the attack's current iterate (the
logits of its gradient-carrying pass, recorded by :class:`LossRecorder` around the estimated model),
and the accuracy on the final sets — to show whether the loss keeps rising with the steps where
PGD stalls (Wang et al., arXiv 2512.22522, Fig. "loss vs iterations").  Attacks run through
:func:`spkrobust.attacks.registry.ATTACKS` exactly as the workflow runs them; with EOT each step's
loss is the mean over its draws.  ``--out`` writes the traces as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_ATTACKS = {
    "pgd": {"type": "pgd", "alpha": "0.25*eps"},
    "sapgd": {"type": "sapgd"},
    "sapgd-assg": {"type": "sapgd", "grad": {"mode": "assg"}},
}


class LossRecorder(nn.Module):
    """Records the per-image CE of every gradient-carrying forward pass (labels set by the caller)."""

    def __init__(self, model: nn.Module, y: torch.Tensor):
        super().__init__()
        self.model, self.y = model, y
        self.meta = getattr(model, "meta", None)
        self.losses: list[float] = []
        self.train(model.training)

    @property
    def stochastic(self) -> bool:
        return bool(getattr(self.model, "stochastic", False))

    def forward(self, x):
        z = self.model(x)
        if torch.is_grad_enabled() and x.requires_grad:
            self.losses.append(float(F.cross_entropy(z.detach(), self.y, reduction="mean")))
        return z


def trace(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: dict, eps: float, steps: int, eot: int,
          seed: int = 0) -> dict:
    """``{loss: [per step], acc}`` of one attack spec run for ``steps`` steps on ``(x, y)``."""
    from spkrobust.attacks import registry as A
    from spkrobust.nets.estimators import with_estimator

    atype, p = A.resolve_attack({**spec, "steps": steps}, eps, cfg_eot=eot)
    src = model
    if p.get("grad") is not None:
        src, _ = with_estimator(model, p["grad"])
    rec = LossRecorder(src, y)
    k = eot if A.is_stochastic(model) else 1
    torch.manual_seed(seed)
    x_adv, _ = A.ATTACKS[atype](rec, p, x, y, eps, k, seed)
    losses = [sum(rec.losses[i:i + k]) / k for i in range(0, len(rec.losses), k)]
    with torch.no_grad():
        draws = 8 if A.is_stochastic(model) else 1
        acc = float((sum(model(x_adv) for _ in range(draws)).argmax(1) == y).float().mean().cpu())
    return {"loss": losses, "acc": acc}


def main(argv=None) -> int:
    from spkrobust.config.expand import parse_eps
    from spkrobust.data.datasets import load_prepared
    from spkrobust.nets.models import load_model

    ap = argparse.ArgumentParser(prog="python -m spkrobust.tools.losstrace", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a saved model (model.pt)")
    ap.add_argument("--data", required=True, help="a prepared dataset (data.pt)")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--eot", type=int, default=1, help="EOT draws per step on a stochastic source")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--out", help="write the traces as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_prepared(args.data)
    x, y = (t[:args.images].to(args.device) for t in data.test_inputs())
    model = load_model(args.model, device=args.device).eval()
    eps = parse_eps(args.eps, "--eps")
    out = {name: trace(model, x, y, spec, eps, args.steps, args.eot) for name, spec in DEFAULT_ATTACKS.items()}
    marks = sorted({0, 1, 2, 4, 9, 19, 29, 49, 99, args.steps - 1} & set(range(args.steps)))
    print("step  " + "  ".join(f"{n:>11}" for n in out))
    for i in marks:
        print(f"{i + 1:>4}  " + "  ".join(f"{t['loss'][i]:11.4f}" if i < len(t["loss"]) else " " * 11
                                          for t in out.values()))
    print(" acc  " + "  ".join(f"{t['acc']:11.3f}" for t in out.values()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"eps": eps, "steps": args.steps, "eot": args.eot, "images": len(x), "traces": out}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One optimizer step of training, run in image micro-batches and (an SNN) checkpointed time chunks
to bound its memory, with the gradient of one pass over the whole batch (issue 20).

BPTT keeps the graph of every image and time step until the backward pass (VGG5 CIFAR at T = 100:
~165 MB per image). :func:`train_step` instead runs ``micro_batch`` images forward and backward at a
time (gradient accumulation: each micro-batch's loss is weighted by its share of the batch, so the
accumulated gradient is that of the batch's mean loss) and each micro-batch over T in checkpointed
chunks of ``time_chunk`` steps (:func:`spkrobust.nets.inference.bounded_forward` under autograd:
one membrane per chunk boundary is kept, the chunk's graph is rebuilt in the backward pass). Only
one micro-batch's graph is alive at a time.

The cut changes no draw: the Poisson keys of the step are made once for the whole batch (one seed
from the global RNG, as an unbounded forward pass draws; each image keyed by its position in the
batch) and sliced per micro-batch, and the dropout masks are drawn once per layer for the whole
batch (:func:`spkrobust.nets.dropout.whole_batch_masks`). Unbounded, the step draws and computes
exactly what one ``model(x)`` / ``backward()`` over the batch does; cut, the weights differ only
by the float rounding of the regrouped sums (tests/unit/training/test_step.py). An ANN's
``nn.Dropout`` draws per call, so a cut ANN step would get other masks (``train-ann`` takes no cut).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F

from spkrobust.config.options import Bounds
from spkrobust.nets.dropout import whole_batch_masks
from spkrobust.nets.encoding import poisson_stream
from spkrobust.nets.heap import release_allocator
from spkrobust.nets.inference import bounded_forward, chunk_steps


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               scale_out: float = 1.0, bounds: Bounds | None = None) -> tuple[float, torch.Tensor]:
    """One optimizer step on the batch ``(x, y)`` (pixels on the model's device) with the loss
    ``cross_entropy(model(x) * scale_out, y)`` (mean over the batch); returns the loss and the
    detached logits."""
    bounds = bounds or Bounds()
    B = len(x)
    mb = B if not bounds.micro_batch else max(1, min(B, int(bounds.micro_batch)))
    snn = callable(getattr(model, "forward_seq", None))
    stochastic = snn and model.stochastic
    seed = int(torch.randint(0, 1 << 62, (1,)).item()) if stochastic else None  # the batch's Poisson key
    if snn and (mb < B or chunk_steps(model.T, mb, bounds.time_chunk) < model.T):
        release_allocator()  # a cut step: its peak is then its live pieces' (spkrobust.nets.memory)
    opt.zero_grad(set_to_none=True)
    total, outs = 0.0, []
    with whole_batch_masks(model, B) as select:
        for i in range(0, B, mb):
            xs, ys = x[i: i + mb], y[i: i + mb]
            select(i, i + len(xs))
            stream = poisson_stream(model, seed, torch.arange(i, i + len(xs))) if stochastic else nullcontext()
            with stream:
                out = bounded_forward(model, xs, None, bounds.time_chunk) if snn else model(xs)
            loss = F.cross_entropy(out * scale_out, ys)
            if len(xs) < B:
                loss = loss * (len(xs) / B)
            loss.backward()
            total += loss.item()
            outs.append(out.detach())
            del out, loss  # nothing of this micro-batch's graph outlives its backward pass
    opt.step()
    return total, torch.cat(outs)

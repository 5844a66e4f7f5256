"""Bounded inference: a model's logits computed a few images and (for an SNN) a few time steps at a
time, with the same result as one call over the whole batch and all T.

Memory of an SNN's forward pass grows with images x time steps (issue 20: one CIFAR image at
T = 2000 held 2.1 GB through VGG5 at once); :func:`bounded_forward` keeps ``micro_batch`` images and
``time_chunk`` steps alive. It is exact, not approximate:

* the neurons carry their membrane from one chunk to the next (the network resets them once, at
  step 0: :meth:`spkrobust.nets.models.SNN.forward_seq`);
* the encoder produces only the chunk's steps, and its Poisson spikes come from a counter-based
  stream keyed per image (:mod:`spkrobust.nets.encoding`): the keys of one forward pass are made
  once for the whole batch and sliced per micro-batch;
* the output is summed over T step by step in time order (:func:`time_sum`)
  and divided by T once at the end.

Bit-identity also needs the weight layers (convolution, linear: BLAS/oneDNN) to give each row the
same floats whatever the number of rows (images x steps) of the call. Measured on this project's
CPU (MKL sgemm, oneDNN conv, 1-2 threads): they do from 4 rows on (1 thread; with 2 threads row
counts that are multiples of 4), but not for 1-3 rows (another kernel: the logits of a T = 2000
VGG5 CIFAR image then differ by ~5e-9, ~3e-7 relative, at chunks of 2 steps, through spikes whose
membrane sits within rounding of the threshold). So a chunk holds at least :data:`MIN_ROWS` rows
(``micro_batch x time_chunk``; 16 steps of one VGG5 CIFAR image are ~8 MB), below which the
requested chunk is lengthened. On AVX-512 CPUs MKL's sgemm also chose its kernels by the row count
(a row of a 15-row and of a 40-row call differed by 3.6e-7), so :mod:`spkrobust` sets MKL's strict
reproducibility mode on its AVX2 path (``MKL_CBWR=AVX2,STRICT``, before MKL's first call; a user's
own value is kept). On an AMD EPYC (AVX2) the narrow classifier (10 outputs) through ``F.linear`` differed
below 10 rows, which a short last chunk reaches: the models' narrow linear layers compute ``x @ Wᵀ`` with
a contiguous ``Wᵀ`` instead (:class:`spkrobust.nets.models.Linear`), the same at any row count there. Other BLAS
builds or GPUs may cut differently: tests/unit/nets/test_chunking.py checks the equality where it runs.

A pass whose T is cut releases the heap tuning (:func:`spkrobust.nets.heap.release_allocator`): its
peak is then the live set of its pieces, which :func:`spkrobust.nets.memory.infer_bytes` models.

:func:`accuracy` (the final accuracy of training and conversion) runs its batches through it.
Under autograd (BPTT: training, attack gradients) the chunks are checkpointed
(``torch.utils.checkpoint``): only the membranes at the chunk boundaries are kept, each chunk's graph
is rebuilt during the backward pass (the Poisson keys make the recomputation draw the same spikes),
and the gradient flows back through the carried membranes; the result equals BPTT over one call up
to float rounding (the reverse recursion regrouped at the chunk boundaries).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from spkrobust.data.datasets import batches
from spkrobust.nets.encoding import poisson_stream
from spkrobust.nets.heap import release_allocator


def time_sum(h: torch.Tensor, acc: torch.Tensor | None = None) -> torch.Tensor:
    """``acc + h[0] + h[1] + ...``, added step by step in time order (so summing T in chunks gives
    the same floats as summing it at once); ``acc`` None: start from ``h[0]``."""
    start = 0
    if acc is None:
        acc, start = h[0], 1
    grad = torch.is_grad_enabled() and h.requires_grad
    if not grad and start == 1:
        acc = acc.clone()
    for t in range(start, h.shape[0]):
        acc = acc + h[t] if grad else acc.add_(h[t])
    return acc


MIN_ROWS = 16  # rows (images x steps) per weight-layer call at least: see the module docstring


def chunk_steps(T: int, images: int, time_chunk: int | None) -> int:
    """The steps per chunk that ``time_chunk`` (None / 0: all T) gives ``images`` images: lengthened
    to at least :data:`MIN_ROWS` rows (images x steps), at most T."""
    if not time_chunk:
        return T
    return max(1, min(max(int(time_chunk), -(-MIN_ROWS // max(1, images))), T))


def _membranes(model: nn.Module) -> list:
    return [m.node.v for m in model.spiking_layers()]


def _chunk(model: nn.Module, x, keys, t0: int, n: int, acc, *v):
    """One time chunk from the membranes ``v`` (ignored at ``t0 == 0``: from rest); returns the
    output summed so far and the membranes after the chunk (the checkpointed unit of BPTT)."""
    if t0 > 0:
        for m, vi in zip(model.spiking_layers(), v):
            m.node.v = vi
    return (time_sum(model.forward_seq(x, t0=t0, steps=n, keys=keys), acc), *_membranes(model))


def _snn_chunked(model: nn.Module, x: torch.Tensor, keys: torch.Tensor | None, time_chunk: int | None) -> torch.Tensor:
    T = model.T
    k = chunk_steps(T, len(x), time_chunk)
    if k < T and torch.is_grad_enabled():  # checkpointed BPTT: keep one membrane per chunk, recompute the rest
        from torch.utils.checkpoint import checkpoint

        acc, v = None, ()
        for t0 in range(0, T, k):
            acc, *v = checkpoint(_chunk, model, x, keys, t0, min(k, T - t0), acc, *v, use_reentrant=False)
        return acc / T
    acc = None
    for t0 in range(0, T, k):
        acc = time_sum(model.forward_seq(x, t0=t0, steps=min(k, T - t0), keys=keys), acc)
    return acc / T


def bounded_forward(model: nn.Module, x: torch.Tensor, micro_batch: int | None = None,
                    time_chunk: int | None = None) -> torch.Tensor:
    """Logits of ``model`` on ``x`` (``[B, C, H, W]`` pixels on the model's device), run
    ``micro_batch`` images at a time (None: all) and, for an SNN, over T in chunks of
    ``time_chunk`` steps (None: all T at once; an SNN is a model with ``forward_seq``, ``T`` and ``encoder``). Equal to ``model(x)`` bit for bit where the model's
    layers give each image the same floats at any batch size (checked in tests/test_chunking.py)."""
    B = len(x)
    mb = B if not micro_batch else max(1, int(micro_batch))
    if B == 0:
        return model(x)
    if callable(getattr(model, "forward_seq", None)):  # an SNN (nets.models.SNN)
        if not torch.is_grad_enabled() and chunk_steps(model.T, mb, time_chunk) < model.T:
            release_allocator()  # T cut: the pass's peak is then its live pieces' (see spkrobust.nets.memory)
        keys = model.encoder.keys(B, x.device)  # one forward pass: one key per image, sliced below
        outs = [_snn_chunked(model, x[i: i + mb], None if keys is None else keys[i: i + mb], time_chunk)
                for i in range(0, B, mb)]
    else:
        outs = [model(x[i: i + mb]) for i in range(0, B, mb)]
    return outs[0] if len(outs) == 1 else torch.cat(outs)


@torch.no_grad()
def accuracy(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
             device: torch.device | str = "cpu", micro_batch: int | None = None, time_chunk: int | None = None,
             seed: int | None = None) -> float:
    """Top-1 accuracy of ``model`` on uint8 images (one pass; a stochastic model: one draw, keyed
    by ``seed`` — None: one number drawn from the global torch RNG — and each image's position in
    ``x_uint8``, so the result does not depend on ``batch_size``, ``micro_batch`` or ``time_chunk``)."""
    model.eval()
    if seed is None:
        seed = int(torch.randint(0, 1 << 62, (1,)).item())
    correct, start = 0, 0
    for xb, yb in batches(x_uint8, y, batch_size):
        idx = torch.arange(start, start + len(xb))
        start += len(xb)
        with poisson_stream(model, seed, idx):
            out = bounded_forward(model, xb.to(device), micro_batch, time_chunk)
        correct += (out.argmax(1).cpu() == yb).sum().item()
    return correct / max(1, len(y))

"""Bounded input gradients: the logits an attack differentiates, computed for one attack batch with an
autograd graph of one image micro-batch and one time chunk at a time (issue 20: BPTT of a T = 2000
CIFAR VGG5 SNN over a batch of 64 held ~169 GB).

:func:`set_bounds` gives an SNN its cut (``micro_batch`` images, ``time_chunk`` steps; the ``grad``
and ``craft`` stages take them from the plan); from then on every call of the model — by the
attacks, their wrappers (:class:`spkrobust.nets.estimators.EstimatedModel`, the ``mix`` estimator),
EOT, success tests — goes through :func:`bounded_logits`:

* without a gradient to the input it is :func:`spkrobust.nets.inference.bounded_forward`;
* with one, the Poisson keys of the forward pass are drawn once for the whole batch (one draw of the
  global RNG or the active :func:`~spkrobust.nets.encoding.poisson_stream`, as an uncut call) and
  sliced, so every image gets the spikes it gets uncut; each micro-batch is a non-reentrant
  ``torch.utils.checkpoint`` (only its input kept, recomputed in the backward pass one micro-batch
  at a time), and inside it each time chunk is one as well (membranes at the chunk boundaries
  kept: the neurons' and, for an estimator that follows the membrane, the estimator's own). The
  recomputation replays the same keys, the RNG state (``preserve_rng_state``) and the estimators
  installed at the forward pass; it updates no state twice (:mod:`spkrobust.nets.replay`).

Input gradients are per image, so the cut changes no result beyond float rounding: the gradient of a
pixel sums its steps chunk by chunk (a regrouped sum) and the reverse recursion restarts at the
chunk boundaries (tests/unit/attacks/test_bounded_attacks.py measures it). Estimators whose backward needs
all T (:data:`~spkrobust.nets.estimators.TIME_GLOBAL`: hart, bptr / ``grad_mode: rate``, rga) run
without time chunks; PDSG, whose σ is taken over the batch
(:data:`~spkrobust.nets.estimators.BATCH_GLOBAL`), runs the whole attack batch in one micro-batch
(time chunks kept: its σ at step t reads the membranes of steps ≤ t, carried across chunks, so it is
exact). :func:`effective_cut` says which cut a pass uses. A cut also releases the process's heap
tuning (:func:`spkrobust.nets.heap.release_allocator`): the recomputed pieces would fragment it. Dropout draws one mask per micro-batch:
attack sources run in ``eval()``, where it is off.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from spkrobust.nets.estimators import BATCH_GLOBAL, TIME_GLOBAL, estimator_spec
from spkrobust.nets.heap import release_allocator
from spkrobust.nets.inference import bounded_forward, chunk_steps, time_sum
from spkrobust.nets.replay import Once


def set_bounds(model: nn.Module, micro_batch: int | None, time_chunk: int | None) -> nn.Module:
    """Make every later call of the SNN ``model`` run in ``micro_batch`` images and ``time_chunk``
    steps (None / 0: no cut); an ANN (no ``forward_seq``) is left as it is. Returns ``model``."""
    if callable(getattr(model, "forward_seq", None)):
        mb, k = int(micro_batch or 0) or None, int(time_chunk or 0) or None
        model.bounds = None if mb is None and k is None else (mb, k)
        if model.bounds is not None:  # recomputed pieces fragment a heap that keeps freed blocks
            release_allocator()
    return model


def effective_cut(model: nn.Module, batch: int, micro_batch: int | None, time_chunk: int | None
                  ) -> tuple[int, int]:
    """``(images, steps)`` per piece of a gradient pass over ``batch`` images with the layers'
    current estimators: pdsg keeps the whole batch, hart / bptr / rga all T, and a piece has at
    least :data:`~spkrobust.nets.inference.MIN_ROWS` rows (as :func:`bounded_forward`)."""
    T = int(model.T)
    modes = {s.mode for s in map(estimator_spec, (m.estimator for m in model.spiking_layers())) if s is not None}
    mb = batch if not micro_batch or modes & set(BATCH_GLOBAL) else max(1, min(int(micro_batch), batch))
    return mb, chunk_steps(T, mb, None if modes & set(TIME_GLOBAL) else time_chunk)


@contextmanager
def _installed(model: nn.Module, estimators: list, rows: int):
    """The estimators of the forward pass on the layers (a recomputation in the backward pass runs
    after the attack's wrapper has put its own back) and the micro-batch's first row."""
    layers = model.spiking_layers()
    saved = [(m.estimator, m.rows) for m in layers]
    for m, e in zip(layers, estimators):
        m.estimator, m.rows = e, rows
    try:
        yield layers
    finally:
        for m, (e, r) in zip(layers, saved):
            m.estimator, m.rows = e, r


def _chunk(model, estimators, rows, x, keys, t0, n, acc, *state):
    """Steps ``[t0, t0 + n)`` from the carried ``state`` (neuron membranes, then estimator membranes);
    returns the output summed so far and the state after the chunk."""
    with _installed(model, estimators, rows) as layers:
        L = len(layers)
        if t0 > 0:
            for m, v, ev in zip(layers, state[:L], state[L:]):
                m.node.v, m.est_v, m.est_t = v, ev, t0
        acc = time_sum(model.forward_seq(x, t0=t0, steps=n, keys=keys), acc)
        return (acc, *[m.node.v for m in layers], *[m.est_v for m in layers])


def _micro(model, estimators, rows, k, x, keys):
    """One micro-batch's logits, its time chunks checkpointed."""
    T = model.T
    if k >= T:
        with _installed(model, estimators, rows):
            return time_sum(model.forward_seq(x, keys=keys)) / T
    acc, state = None, ()
    for t0 in range(0, T, k):
        acc, *state = checkpoint(Once(_chunk), model, estimators, rows, x, keys, t0, min(k, T - t0), acc, *state,
                                 use_reentrant=False)
    return acc / T


def bounded_logits(model: nn.Module, x: torch.Tensor, micro_batch: int | None = None,
                   time_chunk: int | None = None) -> torch.Tensor:
    """Logits of the SNN ``model`` on ``x``, equal to ``model(x)`` (see the module docstring), with an
    input-gradient graph of one micro-batch and one time chunk at a time."""
    if not (torch.is_grad_enabled() and x.requires_grad) or len(x) == 0:
        return bounded_forward(model, x, micro_batch, time_chunk)
    B = len(x)
    estimators = [m.estimator for m in model.spiking_layers()]
    mb, k = effective_cut(model, B, micro_batch, time_chunk)
    keys = model.encoder.keys(B, x.device)  # one forward pass: one key per image, sliced below
    outs = []
    for i in range(0, B, mb):
        ki = None if keys is None else keys[i: i + mb]
        if mb < B:
            outs.append(checkpoint(Once(_micro), model, estimators, i, k, x[i: i + mb], ki, use_reentrant=False))
        else:
            outs.append(_micro(model, estimators, i, k, x, ki))
    return outs[0] if len(outs) == 1 else torch.cat(outs)

"""Whether a checkpointed piece of a forward pass is being recomputed (replayed) for the backward pass.

:mod:`spkrobust.nets.bounded` checkpoints image micro-batches and time chunks
(``torch.utils.checkpoint``): in the backward pass each piece runs again. A recomputation must give
the same graph and must not change state a second time: the ASSG moving averages
(:mod:`spkrobust.nets.assg`) are not updated and the PDSG membrane history (:mod:`spkrobust.nets.pdsg`)
is read, not rebuilt, while :func:`replaying` is True. The flag is a process-wide depth counter, not
a thread-local: the autograd engine may run the recomputation on its own thread (CUDA), while the
thread that called ``backward`` waits for it.
"""
from __future__ import annotations

_depth = [0]


def replaying() -> bool:
    """True while a checkpointed piece is being recomputed."""
    return _depth[0] > 0


class Once:
    """``fn`` for ``torch.utils.checkpoint``: its first call is the forward pass, every later call a
    recomputation, run with :func:`replaying` True."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls == 1:
            return self.fn(*args)
        _depth[0] += 1
        try:
            return self.fn(*args)
        finally:  # also when checkpoint stops the recomputation early (it raises inside)
            _depth[0] -= 1

"""The SNN's dropout: SpikingJelly's multistep ``Dropout`` (one mask per forward pass, drawn at
step 0 and fixed over T), whose masks can be drawn once for a whole batch that then runs in image
micro-batches (:func:`whole_batch_masks`), so the masks do not depend on the cut.

Inside :func:`whole_batch_masks` the first micro-batch to reach a dropout layer draws the layer's
mask for the whole batch (``F.dropout`` of ones, as SpikingJelly's ``create_mask``, with the
shape of the whole batch: the same draws from the global RNG as one forward pass over it), and each
micro-batch uses its rows. Outside it the layer is SpikingJelly's. A checkpointed time chunk
recomputed in the backward pass (:mod:`spkrobust.nets.inference`) finds the same whole-batch mask.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import layer as sj_layer


class Dropout(sj_layer.Dropout):
    """SpikingJelly's multistep dropout with an optional whole-batch mask (see the module docstring);
    the class name stays ``Dropout`` (the networks recognise their dropout layers by it)."""

    def __init__(self, p: float = 0.5):
        super().__init__(p, step_mode="m")
        self.rows: tuple[int, int, int] | None = None  # (first, end, batch) of the running micro-batch
        self.whole: torch.Tensor | None = None  # the whole batch's mask, once drawn

    def create_mask(self, x: torch.Tensor):
        if self.rows is None:
            return super().create_mask(x)
        lo, hi, batch = self.rows
        if self.whole is None:
            ones = torch.ones((batch, *x.shape[1:]), dtype=x.dtype, device=x.device)
            self.whole = F.dropout(ones, self.p, training=True)
        self.mask = self.whole[lo:hi]


@contextmanager
def whole_batch_masks(model: nn.Module, batch: int):
    """While active, the :class:`Dropout` layers of ``model`` draw one mask per layer for a batch
    of ``batch`` images; yields ``select(first, end)``, to be called before the forward pass of the
    micro-batch of images ``[first, end)``. On exit the layers draw per forward pass again."""
    layers = [m for m in model.modules() if isinstance(m, Dropout)]

    def select(first: int, end: int) -> None:
        for m in layers:
            m.rows = (int(first), int(end), int(batch))

    try:
        yield select
    finally:
        for m in layers:
            m.rows, m.whole = None, None

"""Input encoders for SNNs: ``[B, C, H, W]`` pixels in [0, 1] → ``[T, B, C, H, W]`` (or the steps
``[t0, t0 + n)`` of it), with Poisson spikes drawn from a counter-based stream.

* ``poisson`` — the studies' signed Poisson code on the normalised input: at each step a spike of
  sign(x̂) with probability min(|x̂|, 1), where x̂ = (x - mean) / std. With the default
  ``input_norm: half`` (mean = std = 0.5, as all the studies' code) x̂ = 2x - 1 lies in [-1, 1]: no
  probability is clipped and E[spike] = x̂ exactly; dataset statistics run to about ±2 and saturate;
* ``poisson_unsigned`` — spikes with probability x on the raw [0, 1] pixels (the rule of
  SpikingJelly's ``PoissonEncoder``, with the uniforms of the stream below);
* ``direct`` — the normalised analog image at every step.

Both Poisson codes are straight-through: spikes forward, identity backward (the studies' method for
crafting attacks through the encoder).

Randomness: the uniform behind the spike of image ``i`` at step ``t`` and pixel ``p`` is a
splitmix64 hash (in int64 torch ops, shifts masked to act unsigned) of (seed, image index, repeat,
t, p), its top 24 bits as a float32 in [0, 1). The same image therefore gets the same spikes at
any batch size, any image micro-batch and any time chunk, on CPU and GPU. The key of an image is
set by :func:`poisson_stream` (the evaluation passes each image's position in the test split and
the repeat); without one, each forward pass of the network draws one seed from the global torch
RNG and the images are indexed by their position in the batch given to the network (so
``torch.manual_seed`` still makes a run reproducible, and successive passes, e.g. training steps
or EOT samples, get fresh spikes).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn

from spkrobust.config.vocab import ENCODERS

_MASK64 = (1 << 64) - 1


def _i64(u: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    u &= _MASK64
    return u - (1 << 64) if u >= 1 << 63 else u


_GOLDEN, _M1, _M2 = _i64(0x9E3779B97F4A7C15), _i64(0xBF58476D1CE4E5B9), _i64(0x94D049BB133111EB)
_BLOCK = 1 << 20  # elements hashed at a time (bounds the int64 temporaries)


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical (unsigned) right shift of int64 ``z`` by ``s`` bits."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (multiplication wraps modulo 2^64)."""
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    return z ^ _srl(z, 31)


def image_keys(seed: int, indices: torch.Tensor, repeat: int) -> torch.Tensor:
    """The int64 key ``[B]`` of each image: a hash of (seed, index, repeat)."""
    idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
    k = mix64(torch.full_like(idx, _i64(int(seed))) + _GOLDEN)
    k = mix64(k + (idx + 1) * _GOLDEN)
    return mix64(k + _i64((int(repeat) + 1) * (_GOLDEN & _MASK64)))


def uniforms(keys: torch.Tensor, t0: int, steps: int, pixels: int) -> torch.Tensor:
    """float32 uniforms in [0, 1), ``[steps, B, pixels]``: element (t, b, p) hashes ``keys[b]`` with
    the counter ``(t0 + t) * pixels + p`` (so any split of the steps gives the same numbers)."""
    B = keys.numel()
    out = torch.empty(steps, B, pixels, dtype=torch.float32, device=keys.device)
    base = keys.view(B, 1) + (torch.arange(pixels, dtype=torch.int64, device=keys.device) + 1) * _GOLDEN
    stride = _i64(pixels * (_GOLDEN & _MASK64))  # one step further: + pixels * golden (mod 2^64)
    blk = max(1, _BLOCK // max(1, B * pixels))
    for s0 in range(0, steps, blk):
        n = min(blk, steps - s0)
        t = torch.arange(t0 + s0, t0 + s0 + n, dtype=torch.int64, device=keys.device).view(n, 1, 1)
        z = mix64(base.unsqueeze(0) + t * stride)
        out[s0: s0 + n] = _srl(z, 40).to(torch.float32) * (1.0 / (1 << 24))
    return out


@dataclass(frozen=True)
class Stream:
    """The key of a forward pass: ``seed``, per-image ``indices`` (None: position in the batch) and
    ``repeat`` (None: a counter of the forward passes made under this stream)."""

    seed: int
    indices: torch.Tensor | None = None
    repeat: int | None = 0


class _StraightThrough(torch.autograd.Function):
    """Forward: the given spikes. Backward: identity w.r.t. the analog value they encode."""

    @staticmethod
    def forward(ctx, analog, spikes):
        return spikes

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class Encoder(nn.Module):
    def __init__(self, kind: str, T: int, mean: list[float], std: list[float]):
        super().__init__()
        if kind not in ENCODERS:
            raise ValueError(f"unknown encoder {kind!r}; allowed: {', '.join(ENCODERS)}")
        self.kind, self.T = kind, int(T)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.stream: Stream | None = None
        self._passes = 0  # forward passes made under the current stream (its repeat None)

    @property
    def stochastic(self) -> bool:
        return self.kind != "direct"

    def keys(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """The images' keys for one forward pass of the network over ``batch`` images (None for
        ``direct``); see the module docstring for where they come from."""
        if not self.stochastic:
            return None
        st = self.stream
        if st is None:
            seed = int(torch.randint(0, 1 << 62, (1,)).item())
            return image_keys(seed, torch.arange(batch), 0).to(device)
        idx = torch.arange(batch) if st.indices is None else torch.as_tensor(st.indices).reshape(-1)
        if len(idx) != batch:
            raise ValueError(f"Poisson stream: {len(idx)} image indices for a batch of {batch}")
        repeat = st.repeat
        if repeat is None:
            repeat, self._passes = self._passes, self._passes + 1
        return image_keys(st.seed, idx.cpu(), repeat).to(device)

    def forward(self, x: torch.Tensor, t0: int = 0, steps: int | None = None,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        """Steps ``[t0, t0 + steps)`` (default: all T) of the code of ``x``; ``keys`` (from
        :meth:`keys`, one per image) fix the Poisson draws (None: :meth:`keys` is asked)."""
        n = self.T - int(t0) if steps is None else int(steps)
        if self.kind == "poisson_unsigned":
            xa = x
        else:
            xa = (x - self.mean) / self.std
        xe = xa.unsqueeze(0).expand(n, *xa.shape)
        if self.kind == "direct":
            return xe
        if keys is None:
            keys = self.keys(len(x), x.device)
        with torch.no_grad():
            u = uniforms(keys.to(x.device), int(t0), n, xa[0].numel() if len(xa) else 0).view(xe.shape)
            if self.kind == "poisson_unsigned":
                spikes = (u < xe).to(xe.dtype)
            else:
                spikes = torch.sign(xe) * (u < xe.abs()).to(xe.dtype)
        return _StraightThrough.apply(xe, spikes)

    def extra_repr(self):
        return f"kind={self.kind}, T={self.T}"


@contextmanager
def poisson_stream(model: nn.Module, seed: int, indices=None, repeat: int | None = 0):
    """While active, every :class:`Encoder` of ``model`` draws its spikes from the key (``seed``,
    image ``indices`` — one per image of each forward pass, e.g. positions in the test split;
    None: position in the batch —, ``repeat``; None: a new repeat per forward pass). A model
    without an encoder (an ANN) is unaffected."""
    encs = [m for m in model.modules() if isinstance(m, Encoder)]
    idx = None if indices is None else torch.as_tensor(indices, dtype=torch.int64).reshape(-1).cpu()
    saved = [(e.stream, e._passes) for e in encs]
    for e in encs:
        e.stream, e._passes = Stream(int(seed), idx, repeat), 0
    try:
        yield
    finally:
        for e, (st, p) in zip(encs, saved):
            e.stream, e._passes = st, p

"""Fused multistep IF/LIF neuron for CPU (issue #7), equivalent to SpikingJelly's.

The studies' neuron with soft reset, on ``[T, B, ...]`` inputs::

    h[t] = decay * v[t-1] + x[t]        (IF: decay = 1, ``v + x``)
    s[t] = heaviside(h[t] - θ)          (spike when h[t] >= θ)
    v[t] = h[t] - θ * s[t]              (soft reset; with ``detach_reset`` no gradient through s here)

It reproduces ``neuron.LIFNode(tau=1/(1-leak), decay_input=False, v_reset=None,
detach_reset=D, step_mode='m', backend='torch')`` (``neuron.IFNode(v_reset=None)`` for
leak = 1) in training mode: forward spikes bit for bit (the same float32 operations in the same
order: ``v * (1. - 1./tau) + x``, ``v - spike * θ``), input gradients up to float rounding.

Why it is faster than SpikingJelly's torch backend:

* the forward time loop runs without autograd (no graph of T×5 nodes, no per-step allocations:
  the outputs are preallocated ``[T, ...]`` tensors written with ``out=``/in-place ops), and stores
  only the charged potential ``h`` (one ``[T, ...]`` tensor) for backward;
* the backward pass is one reverse loop with a single fused op per step: with
  ``g[t] = dL/ds[t] * sg'(h[t]-θ)`` and ``c[t] = decay * (1 - θ sg'(h[t]-θ))`` (``c[t] = decay``
  with a detached reset), both computed for all t at once (vectorised over ``[T, ...]``),
  ``dL/dx[t] = g[t] + c[t] * dL/dx[t+1]``;
* under ``torch.no_grad`` nothing is stored;
* on CPU float32 both loops are one compiled C pass each (``fused_kernel.c``; built on first use with
  the system C compiler, cached, called via ctypes on ``torch.get_num_threads()`` threads): the
  forward reads x and writes spikes and h, the backward reads h and dL/ds and writes dL/dx. Without
  a compiler (or with ``SPKROBUST_FUSED_NATIVE=0``, or for other dtypes/devices) the same loops run
  as preallocated, in-place torch ops: spikes identical, gradients equal up to float rounding;
* :func:`spkrobust.nets.heap.tune_allocator` (called when a node is built) stops glibc from
  handing every large ``[T*B, ...]`` block out as fresh, page-faulting ``mmap`` memory.

The backward formula (``dL/dh[t] = dL/ds[t]·sg' + dL/dv[t]·(1 - θ·sg')``, ``dL/dx[t] = dL/dh[t]``,
``dL/dv[t-1] = decay·dL/dh[t]``) is that of SpikingJelly's graph with ``detach_reset=False``; with
``detach_reset=True`` the factor ``(1 - θ·sg')`` is 1 (the reset is a constant, as Rathi et al.'s).
``sg'`` is ``surrogate_function.derivative(x)``: every surrogate in :mod:`spkrobust.nets.neurons`
declares its derivative and the kernel formula for it (``native_kind``); the studies'
piecewise-linear surrogate also has an in-place fast path in the torch loops.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
from spikingjelly.activation_based import base

from spkrobust.nets.heap import tune_allocator
from spkrobust.nets.surrogates import triangle


def sj_decay(leak: float) -> float:
    """SpikingJelly's LIF decay ``1. - 1. / tau`` with ``tau = 1/(1-leak)``, as a Python float
    (bit-identical to what ``LIFNode(tau=1/(1-leak), decay_input=False)`` multiplies by)."""
    leak = float(leak)
    if leak == 1.0:
        return 1.0
    tau = 1.0 / (1.0 - leak)
    return 1.0 - 1.0 / tau


# --------------------------------------------------------------------------------------------
# Native kernel: one pass over memory per direction (forward: read x, write s and h; backward:
# read h and dL/ds, write dL/dx), compiled on first use from spkrobust/nets/fused_kernel.c with the system C
# compiler into a per-user cache, called through ctypes (which releases the GIL, so a thread pool
# splits the neurons over torch.get_num_threads() threads). No torch headers: compiling takes well
# under a second. float32 contiguous CPU tensors only; anything else (or no compiler, or
# SPKROBUST_FUSED_NATIVE=0) uses the pure-torch loops below, which give identical spikes.
# Built with -ffp-contract=off and no fast-math so `v*decay + x` rounds twice, exactly as
# SpikingJelly's `v * (1. - 1. / tau) + x`.
# --------------------------------------------------------------------------------------------
def kernel_source() -> str:
    """The C source of the native kernel (``spkrobust/nets/fused_kernel.c``, shipped as package data)."""
    from importlib.resources import files

    return files("spkrobust.nets").joinpath("fused_kernel.c").read_text()

_native = None  # None: not tried yet; False: unavailable; else the ctypes library
_native_reason = ""
_pool = None
_pool_pid = None
_MIN_PER_THREAD = 1 << 15  # elements; below this one thread does the whole layer


def _cache_dir() -> str:
    import os
    import tempfile

    base = os.environ.get("SPKROBUST_CACHE") or os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    d = os.path.join(base, "spkrobust")
    try:
        os.makedirs(d, exist_ok=True)
        if os.access(d, os.W_OK):
            return d
    except OSError:
        pass
    return tempfile.gettempdir()


def _load_native():
    """Compile (once, cached by source hash) and load the kernel; False when impossible."""
    global _native, _native_reason
    if _native is not None:
        return _native
    import ctypes
    import hashlib
    import os
    import platform
    import shutil
    import subprocess
    import tempfile

    if os.environ.get("SPKROBUST_FUSED_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        _native, _native_reason = False, "disabled by SPKROBUST_FUSED_NATIVE=0"
        return _native
    flags = ["-O3", "-fPIC", "-shared", "-std=c99", "-ffp-contract=off", "-fno-fast-math", "-fno-trapping-math",
             "-fno-math-errno"]
    source = kernel_source()
    key = hashlib.sha256((source + " ".join(flags) + platform.machine()).encode()).hexdigest()[:16]
    path = os.path.join(_cache_dir(), f"fused_{key}_{platform.machine()}.so")
    try:
        if not os.path.exists(path):
            cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
            if not cc:
                raise OSError("no C compiler (cc/gcc/clang) on PATH")
            with tempfile.TemporaryDirectory() as tmp:
                src = os.path.join(tmp, "fused.c")
                with open(src, "w") as f:
                    f.write(source)
                out = os.path.join(tmp, "fused.so")
                r = subprocess.run([cc, *flags, src, "-o", out, "-lm"], capture_output=True, text=True, timeout=120)
                if r.returncode != 0:
                    raise OSError(f"{cc} failed: {r.stderr.strip()[:300]}")
                part = f"{path}.{os.getpid()}.part"
                shutil.copyfile(out, part)
                os.replace(part, path)  # atomic: concurrent jobs never load a half-written file
        lib = ctypes.CDLL(path)
        i64, f32, ci, vp = ctypes.c_int64, ctypes.c_float, ctypes.c_int, ctypes.c_void_p
        lib.fused_forward.argtypes = [vp, vp, vp, vp, i64, i64, i64, i64, f32, f32]
        lib.fused_forward.restype = None
        lib.fused_backward.argtypes = [vp, vp, vp, vp, vp, i64, i64, i64, i64, f32, f32, ci, f32, f32, ci]
        lib.fused_backward.restype = None
        _native = lib
    except Exception as e:  # noqa: BLE001 - any failure means: use the torch loops
        _native, _native_reason = False, f"{type(e).__name__}: {e}"
    return _native


def native_status() -> str:
    """'native' when the compiled kernel is in use, else why not (for logs and the benchmark)."""
    lib = _load_native()
    return "native" if lib else f"torch loops ({_native_reason})"


def _use_native(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and bool(_load_native())


def _parallel(fn, N: int, *args):
    """Run ``fn(i0, i1, *args)`` over [0, N) split across torch's intra-op thread count."""
    global _pool, _pool_pid
    import os

    nt = max(1, min(torch.get_num_threads(), N // _MIN_PER_THREAD))
    if nt == 1:
        fn(0, N, *args)
        return
    if _pool is None or _pool._max_workers < nt - 1 or _pool_pid != os.getpid():  # new pool after fork
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(max_workers=nt - 1, thread_name_prefix="spkrobust-fused")
        _pool_pid = os.getpid()
    step = -(-N // nt)
    step = -(-step // 16) * 16  # 64-byte aligned chunks
    bounds = [(i, min(i + step, N)) for i in range(0, N, step)]
    futs = [_pool.submit(fn, i0, i1, *args) for i0, i1 in bounds[1:]]
    fn(*bounds[0], *args)
    for f in futs:
        f.result()


def _native_forward(x: torch.Tensor, threshold: float, decay: float, store_h: bool, v: torch.Tensor | None):
    lib = _load_native()
    T, N = x.shape[0], x[0].numel()
    spikes = torch.empty_like(x)
    h = torch.empty_like(x) if store_h else None
    hp = h.data_ptr() if h is not None else None
    vp = v.data_ptr() if v is not None else None
    xp, sp = x.data_ptr(), spikes.data_ptr()
    _parallel(lambda i0, i1: lib.fused_forward(xp, sp, hp, vp, T, N, i0, i1, threshold, decay), N)
    return spikes, h


def _native_kind(sg):
    """(kind, a, w) of the kernel's formula for this surrogate, as the surrogate declares it
    (``native_kind``, see :mod:`spkrobust.nets.neurons`), or (0, 0, 1): the kernel reads
    ``sg.derivative(h - θ)`` computed in torch."""
    kind = getattr(sg, "native_kind", None)
    return tuple(kind) if kind is not None else (0, 0.0, 1.0)


def _native_backward(h: torch.Tensor, grad_s: torch.Tensor, threshold: float, decay: float, sg, detach: bool,
                     grad_v: torch.Tensor | None = None):
    lib = _load_native()
    T, N = h.shape[0], h[0].numel()
    kind, a, w = _native_kind(sg)
    sgd = sg.derivative(h - threshold).to(torch.float32).contiguous() if kind == 0 else None
    grad_x = torch.empty_like(h)
    hp, gp, xp = h.data_ptr(), grad_s.data_ptr(), grad_x.data_ptr()
    dp = sgd.data_ptr() if sgd is not None else None
    vp = grad_v.data_ptr() if grad_v is not None else None
    _parallel(lambda i0, i1: lib.fused_backward(hp, gp, dp, vp, xp, T, N, i0, i1, threshold, decay, kind, a, w,
                                                int(detach)), N)
    return grad_x


def _surrogate_derivative(sg, d: torch.Tensor) -> torch.Tensor:
    """``sg'(d)``; may overwrite ``d`` (a scratch tensor owned by the caller)."""
    if _native_kind(sg)[0] == 1:
        return triangle(d, float(sg.alpha), float(sg.width), inplace=True)
    return sg.derivative(d)


def _forward_loop(x: torch.Tensor, threshold: float, decay: float, store_h: bool, v: torch.Tensor | None = None):
    """Returns (spikes [T, ...], h [T, ...] or None). ``x`` is contiguous ``[T, ...]``; ``v`` (contiguous,
    ``x[0]``'s shape and dtype) is the membrane before step 0, overwritten with the membrane after the
    last step; None: start at rest and keep no state."""
    if _use_native(x) and (v is None or _use_native(v)):
        return _native_forward(x, threshold, decay, store_h, v)
    T = x.shape[0]
    spikes = torch.empty_like(x)
    if store_h:
        h = torch.empty_like(x)
        if v is None:
            h[0].copy_(x[0])  # v starts at 0: 0 * decay + x == x exactly
        else:  # SpikingJelly's charge: v * decay + x (IF: v + x)
            torch.mul(v, decay, out=h[0]) if decay != 1.0 else h[0].copy_(v)
            h[0].add_(x[0])
        for t in range(T):
            ht = h[t]
            torch.ge(ht, threshold, out=spikes[t])
            if t + 1 < T:
                hn = h[t + 1]
                torch.sub(ht, spikes[t], alpha=threshold, out=hn)  # v[t] = h[t] - θ s[t]
                if decay != 1.0:
                    hn.mul_(decay)
                hn.add_(x[t + 1])
        if v is not None:
            torch.sub(h[T - 1], spikes[T - 1], alpha=threshold, out=v)
        return spikes, h
    if v is None:
        buf = x[0].clone()
    else:
        buf = v.mul(decay) if decay != 1.0 else v.clone()
        buf.add_(x[0])
    for t in range(T):
        torch.ge(buf, threshold, out=spikes[t])
        if t + 1 < T or v is not None:
            buf.sub_(spikes[t], alpha=threshold)
        if t + 1 < T:
            if decay != 1.0:
                buf.mul_(decay)
            buf.add_(x[t + 1])
    if v is not None:
        v.copy_(buf)
    return spikes, None


class _FusedFn(torch.autograd.Function):
    """(spikes, v_after) = FusedLIF(x, v_before); backward by the reverse loop (first-order only).

    ``v_before`` is the membrane carried in from the time chunk before (zeros at rest) and
    ``v_after`` the one carried out, so chunked BPTT through the membrane is exact:
    ``dL/dv_before = decay * dL/dx[0]``, and ``dL/dv_after`` enters the reverse loop at the last step."""

    @staticmethod
    def forward(ctx, x, v_before, threshold, decay, sg, detach_reset):
        needs = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        v = v_before.detach().clone().contiguous()  # becomes v_after
        spikes, h = _forward_loop(x.contiguous(), threshold, decay, store_h=needs, v=v)
        if needs:
            ctx.save_for_backward(h)
            ctx.threshold, ctx.decay, ctx.sg, ctx.detach = threshold, decay, sg, bool(detach_reset)
        return spikes, v

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_s, grad_v):
        (h,) = ctx.saved_tensors
        th, decay = ctx.threshold, ctx.decay
        grad_s = grad_s.contiguous()
        grad_v = grad_v.contiguous() if grad_v is not None and bool(grad_v.any()) else None
        if _use_native(h, grad_s) and (grad_v is None or _use_native(grad_v)):
            grad_x = _native_backward(h, grad_s, th, decay, ctx.sg, ctx.detach, grad_v)
        else:
            grad_x = _torch_backward(h, grad_s, th, decay, ctx.sg, ctx.detach, grad_v)
        return grad_x, grad_x[0] * decay, None, None, None, None


def _torch_backward(h, grad_s, th, decay, sg, detach, grad_v):
    T = h.shape[0]
    sgd = _surrogate_derivative(sg, h - th)  # [T, ...] sg'(h - θ)
    grad_x = grad_s * sgd  # g[t]
    if grad_v is not None:  # the gradient the next chunk sends back through v after step T-1
        grad_x[T - 1].add_(grad_v if detach else grad_v * (1.0 - th * sgd[T - 1]))
    if T > 1 and detach:  # c[t] = decay: the reset is a constant
        for t in range(T - 2, -1, -1):
            grad_x[t].add_(grad_x[t + 1], alpha=decay)
    elif T > 1:
        # c[t] = decay * (1 - θ sg'[t]); only t < T-1 is needed
        c = sgd[:-1]
        c.mul_(-th).add_(1.0)
        if decay != 1.0:
            c.mul_(decay)
        for t in range(T - 2, -1, -1):
            grad_x[t].addcmul_(grad_x[t + 1], c[t])
    return grad_x


class FusedNode(base.MemoryModule):
    """Multistep soft-reset IF (``leak == 1``) / LIF neuron, ``[T, B, ...] -> spikes [T, B, ...]``.

    Like SpikingJelly's multistep nodes it carries the membrane ``v`` from one call to the next
    until :meth:`reset` (so a forward pass may run T in chunks: chunks of 3 + 5 steps give the
    spikes of one call over 8, bit for bit); after ``reset()`` a call starts from ``v = 0``. It
    always uses the surrogate gradient (there is no eval-mode hard step). Gradients flow through the
    carried membrane, as through SpikingJelly's: BPTT over chunks equals BPTT over one call.
    """

    def __init__(self, v_threshold: float, leak: float, surrogate_function, detach_reset: bool = False):
        super().__init__()
        self.detach_reset = bool(detach_reset)  # default False as SpikingJelly's nodes
        self.step_mode = "m"
        if not 0.0 < float(leak) <= 1.0:
            raise ValueError(f"leak must be in (0, 1], got {leak}")
        self.v_threshold = float(v_threshold)
        self.leak = float(leak)
        self.decay = sj_decay(self.leak)
        self.surrogate_function = surrogate_function
        tune_allocator()  # large [T, ...] blocks: reuse heap memory instead of faulting in fresh pages

        self.v = None  # the carried membrane, x_seq[0]'s shape; None: at rest

    def reset(self):
        """Back to rest (``v = 0``); also called by SpikingJelly's ``functional.reset_net``."""
        self.v = None

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() < 2:
            raise ValueError(f"FusedNode expects [T, B, ...], got shape {tuple(x_seq.shape)}")
        if self.v is None:
            v = torch.zeros(x_seq.shape[1:], dtype=x_seq.dtype, device=x_seq.device)
        elif self.v.shape != x_seq.shape[1:] or self.v.dtype != x_seq.dtype or self.v.device != x_seq.device:
            raise ValueError(f"FusedNode carries a membrane of shape {tuple(self.v.shape)} but got steps of "
                             f"shape {tuple(x_seq.shape[1:])}; call reset() before a new input")
        else:
            v = self.v
        if torch.is_grad_enabled() and (x_seq.requires_grad or v.requires_grad):
            spikes, self.v = _FusedFn.apply(x_seq, v, self.v_threshold, self.decay, self.surrogate_function,
                                            self.detach_reset)
            return spikes
        with torch.no_grad():
            if v.requires_grad:  # a membrane from a gradient-carrying chunk: keep its graph intact
                v = v.detach().clone()
            self.v = v  # updated in place to the membrane after the last step
            return _forward_loop(x_seq.contiguous(), self.v_threshold, self.decay, store_h=False, v=v)[0]

    def extra_repr(self):
        return f"v_threshold={self.v_threshold}, leak={self.leak}, detach_reset={self.detach_reset}, step_mode=m"

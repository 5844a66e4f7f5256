"""The process heap (glibc) for SNN passes: kept for passes over all T, released for cut ones.

:func:`tune_allocator` keeps large freed blocks in the heap (fast reuse of ``[T*B, ...]`` blocks),
:func:`release_allocator` undoes it for the rest of the process once a pass is cut in time (a
bounded attack's recomputed pieces, and chunked inference, fragment such a heap: its peak then
depends on the machine, not only on the piece). Measured effects: :mod:`spkrobust.nets.memory`.
"""
from __future__ import annotations

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_malloc_tuned = None
_released = None  # what release_allocator returned: it runs once per process


def _glibc():
    """The process's C library when it is glibc on Linux (``mallopt`` / ``malloc_trim``), else None."""
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    import ctypes

    return ctypes.CDLL(None)


def tune_allocator() -> bool:
    """Keep large freed blocks in the process heap instead of returning them to the OS (glibc).

    An SNN's ``[T*B, ...]`` activations are hundreds of MB; glibc serves every block over 32 MB
    with a fresh ``mmap`` whose pages fault in on first write (measured: a 128 MB elementwise op
    takes 3.5x longer into fresh memory than into reused memory), while the ANN's smaller blocks
    are recycled from the heap. Raising ``M_MMAP_THRESHOLD`` (to 1 GiB) and ``M_TRIM_THRESHOLD``
    makes large blocks heap blocks that are reused step after step (the heap then stays at the
    process's peak, which the next batch needs anyway). Process-wide, idempotent, a no-op off
    glibc or with ``SPKROBUST_MALLOPT=0``. Returns whether the setting is in effect.
    """
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    import os

    _malloc_tuned = False
    if os.environ.get("SPKROBUST_MALLOPT", "1").strip().lower() in ("0", "false", "no", "off"):
        return _malloc_tuned
    try:
        libc = _glibc()
        if libc is not None:
            ok = libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1
            _malloc_tuned = bool(libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1) == 1 and ok)
    except Exception:  # noqa: BLE001 - purely a speed setting
        _malloc_tuned = False
    return _malloc_tuned


def release_allocator() -> bool:
    """Undo :func:`tune_allocator` for the rest of the process: blocks over 128 KiB are mapped and
    returned to the OS when freed, and the heap is trimmed (glibc's static defaults).

    For passes cut in time (chunked inference, checkpointed BPTT): their pieces allocate blocks of
    changing sizes, which a heap that keeps every freed block fragments. Measured (1 thread,
    CIFAR VGG5 IF SNN, T = 2000, one image, chunks of 1219 steps): peak RSS 557 + 3465 MiB tuned,
    557 + 2237 MiB released, the same CPU time (18.1 / 17.6 s); chunks of 200: 1154 / 741 MiB.
    A no-op off glibc; returns whether glibc took the setting. Later :func:`tune_allocator` calls
    leave it released. Once per process: later calls (every cut pass calls it) return the first
    call's result without touching the heap again."""
    global _malloc_tuned, _released
    _malloc_tuned = False
    if _released is not None:
        return _released
    _released = False
    try:
        libc = _glibc()
        if libc is not None:
            ok = libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024) == 1
            ok = libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024) == 1 and ok
            libc.malloc_trim(0)
            _released = bool(ok)
    except Exception:  # noqa: BLE001 - purely a memory setting
        _released = False
    return _released

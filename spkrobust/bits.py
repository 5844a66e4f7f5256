"""Boolean vectors as JSON text: the base64 of ``numpy.packbits`` (big bit order).  Used by the
per-image outcomes of clean/evaluation records and by the ensemble's per-member record.  Torch-free."""
from __future__ import annotations

import base64
from typing import Any

import numpy as np

from spkrobust.errors import FileProblem


def pack_bits(mask: Any) -> str:
    """Boolean vector -> base64 text of its packed bits."""
    m = np.asarray(mask, dtype=bool).ravel()
    return base64.b64encode(np.packbits(m).tobytes()).decode("ascii")


def unpack_bits(text: str, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits` for a vector of length ``n``."""
    try:
        raw = np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype=np.uint8)
    except (ValueError, AttributeError):
        raise FileProblem("per-image outcomes: not base64 packed bits") from None
    if len(raw) != (n + 7) // 8:
        raise FileProblem(f"per-image outcomes: {len(raw)} bytes cannot hold exactly {n} images")
    return np.unpackbits(raw, count=n).astype(bool)

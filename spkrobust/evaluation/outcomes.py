"""Per-image outcomes: which test images a model got right, stored compactly in JSON records.

A record's ``outcomes`` field is ``{"format": OUTCOMES_FORMAT, "n": n, "positions": P,
"correct": [bits_repeat_1, bits_repeat_2, ...]}`` where

* ``positions`` are the images' positions in the prepared test split (``prep.test_x``), either the
  string ``"all"`` (positions ``0 .. n-1``) or the packed form of a boolean mask over the split
  (``{"of": split_size, "mask": bits}``);
* each ``bits`` string is the base64 text of ``numpy.packbits`` (big bit order) of one repeat's
  boolean vector "image i was classified correctly", in position order.

1000 images cost 168 characters per repeat. Every comparison between two models pairs them on the
positions both records cover (:func:`align`), so paired statistics never mix different images.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from spkrobust.bits import pack_bits, unpack_bits
from spkrobust.config.vocab import OUTCOMES_FORMAT
from spkrobust.errors import FileProblem

__all__ = ["OUTCOMES_FORMAT", "align", "decode", "encode", "pack_bits", "per_image_rate", "unpack_bits"]


def encode(correct: Sequence[Any], positions: Any = None, split_size: int | None = None) -> dict:
    """The ``outcomes`` field for per-repeat correctness vectors.

    ``positions`` (an integer array of positions in the test split, strictly increasing) may be
    left out when the vectors cover the whole split in order."""
    rows = [np.asarray(c, dtype=bool).ravel() for c in correct]
    n = len(rows[0]) if rows else 0
    if any(len(r) != n for r in rows):
        raise ValueError("per-image outcomes: repeats differ in length")
    out: dict[str, Any] = {"format": OUTCOMES_FORMAT, "n": n, "positions": "all",
                           "correct": [pack_bits(r) for r in rows]}
    if positions is not None:
        pos = np.asarray(positions, dtype=np.int64).ravel()
        if len(pos) != n:
            raise ValueError(f"per-image outcomes: {len(pos)} positions for {n} images")
        if n and np.any(np.diff(pos) <= 0):
            # keep the position order canonical (sorted) so that masks describe the data exactly
            order = np.argsort(pos, kind="stable")
            pos = pos[order]
            if np.any(np.diff(pos) == 0):
                raise ValueError("per-image outcomes: repeated positions")
            out["correct"] = [pack_bits(r[order]) for r in rows]
        size = int(split_size if split_size is not None else (pos[-1] + 1 if n else 0))
        if not (n == size and np.array_equal(pos, np.arange(n))):
            mask = np.zeros(size, dtype=bool)
            mask[pos] = True
            out["positions"] = {"of": size, "mask": pack_bits(mask)}
    return out


def decode(field: Any, where: str = "record") -> tuple[np.ndarray, np.ndarray]:
    """``(positions, correct)``: positions [n] and a boolean matrix [repeats, n]."""
    if not isinstance(field, dict) or field.get("format") != OUTCOMES_FORMAT:
        raise FileProblem(f"{where}: no per-image outcomes in format {OUTCOMES_FORMAT}; rerun clean/evaluate")
    n = int(field["n"])
    pos_f = field.get("positions", "all")
    if pos_f == "all":
        pos = np.arange(n)
    else:
        pos = np.flatnonzero(unpack_bits(pos_f["mask"], int(pos_f["of"])))
        if len(pos) != n:
            raise FileProblem(f"{where}: per-image outcomes name {len(pos)} positions for {n} images")
    correct = np.stack([unpack_bits(c, n) for c in field["correct"]]) if field["correct"] \
        else np.zeros((0, n), dtype=bool)
    return pos, correct


def per_image_rate(field: Any, where: str = "record") -> tuple[np.ndarray, np.ndarray]:
    """``(positions, rate)``: each image's fraction of repeats classified correctly."""
    pos, correct = decode(field, where)
    return pos, correct.mean(axis=0) if len(correct) else np.zeros(len(pos))


def align(*fields: Any) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-image rates of several records restricted to the positions they all cover.

    Returns ``(positions, [rate_1, rate_2, ...])``, each rate in the common position order."""
    decoded = [per_image_rate(f) for f in fields]
    common = decoded[0][0]
    for pos, _ in decoded[1:]:
        common = np.intersect1d(common, pos, assume_unique=True)
    rates = [rate[np.searchsorted(pos, common)] for pos, rate in decoded]
    return common, rates

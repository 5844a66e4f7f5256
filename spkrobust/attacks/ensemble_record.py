"""The per-member record an ensemble set carries (its meta's ``ensemble``, copied into its evaluation
records): written by :mod:`spkrobust.attacks.ensemble`, read by the report.  Torch-free, so that the
report reads it without importing torch.

``{format, n, stop_early, judge_draws, members, member_specs, clean_wrong, attempted [m], broken [m],
robust_on_source, member_info}``; ``clean_wrong``, ``attempted`` and ``broken`` are packed bit vectors
(:mod:`spkrobust.bits`) over the set's images, in the set's image order."""
from __future__ import annotations

import numpy as np

from spkrobust.bits import pack_bits, unpack_bits
from spkrobust.config.vocab import ENSEMBLE_FORMAT
from spkrobust.errors import FileProblem


def encode_record(*, n: int, stop_early: bool, judge_draws: int, members: list[dict], clean_wrong, attempted,
                  broken, robust_on_source: float | None, member_info: list[dict]) -> dict:
    """The record (boolean arrays: ``clean_wrong`` [n], ``attempted`` / ``broken`` [m, n])."""
    return {
        "format": ENSEMBLE_FORMAT, "n": n, "stop_early": bool(stop_early), "judge_draws": judge_draws,
        "members": [m["name"] for m in members], "member_specs": [dict(m) for m in members],
        "clean_wrong": pack_bits(clean_wrong),
        "attempted": [pack_bits(a) for a in attempted],
        "broken": [pack_bits(b) for b in broken],
        "robust_on_source": robust_on_source,
        "member_info": member_info,
    }


def decode_record(rec: dict) -> dict:
    """``{members, clean_wrong [n], attempted [m, n], broken [m, n]}`` as boolean numpy arrays."""
    if not isinstance(rec, dict) or rec.get("format") != ENSEMBLE_FORMAT:
        raise FileProblem(f"ensemble record: not in format {ENSEMBLE_FORMAT}; recraft the ensemble set")
    n = int(rec["n"])
    m = len(rec["members"])

    def stack(rows):
        return np.stack([unpack_bits(r, n) for r in rows]) if rows else np.zeros((m, n), bool)

    return {"members": list(rec["members"]), "clean_wrong": unpack_bits(rec["clean_wrong"], n),
            "attempted": stack(rec["attempted"]), "broken": stack(rec["broken"])}

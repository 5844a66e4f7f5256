"""Text formatting shared by the report's markdown and CSV: percentages, tables, eps labels."""
from __future__ import annotations

import json
import re
from typing import Any


def eps_display(label: str) -> str:
    """``2_255`` -> ``2/255``; other labels unchanged."""
    return str(label).replace("_", "/")


def _eps_label(eps: Any) -> str:
    if isinstance(eps, str):
        return eps.replace("/", "_")
    x = float(eps)
    if x == 0:
        return "0"
    k = x * 255
    if abs(k - round(k)) < 1e-6:
        return f"{int(round(k))}_255"
    return repr(x)


def _fmt_csv(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return str(v)


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def _pm(mean: float | None, std: float | None, show_std: bool) -> str:
    if mean is None:
        return "–"
    if show_std and std is not None:
        return f"{_pct(mean)} ± {_pct(std)}"
    return _pct(mean)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _safe_name(s: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", str(s))

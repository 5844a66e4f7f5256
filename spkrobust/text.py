"""Text formatting shared by the sanity checks and the report: percentages, Markdown tables, CSV
cells, file-safe names.  Pure Python (below every layer: the checks and the report both use it)."""
from __future__ import annotations

import json
import re
from typing import Any


def pct(x: float | None, digits: int = 1, missing: str = "–", suffix: str = "") -> str:
    """A fraction as percent: ``pct(0.1234)`` -> ``12.3``; ``None`` -> ``missing``.  The checks
    write ``pct(x, 2, "n/a", "%")`` (``12.34%``) and points as ``pct(x, 2, suffix="pp")``."""
    return missing if x is None else f"{100 * float(x):.{digits}f}{suffix}"


def pm(mean: float | None, std: float | None, show_std: bool) -> str:
    """``mean ± std`` in percent (the std only when ``show_std``); ``–`` when there is no mean."""
    if mean is None:
        return "–"
    if show_std and std is not None:
        return f"{pct(mean)} ± {pct(std)}"
    return pct(mean)


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; a ``|`` inside a cell is escaped."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def fmt_csv(v: Any) -> str:
    """One CSV cell: '' for None, true/false, repr of floats, compact sorted JSON of containers."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return str(v)


def safe_name(s: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", str(s))

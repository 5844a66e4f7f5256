"""The ``grad`` value of a gradient attack: :class:`GradSpec`, its parsing against the schema
(``$defs.grad_spec`` holds the defaults) and its label.  What each mode computes is
:mod:`spkrobust.nets.estimators`."""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

from spkrobust.config.vocab import ASSG_SHAPES, ATTACK_SURROGATES, GRAD_COMBINE, GRAD_ESTIMATORS
from spkrobust.errors import UserError

MODES = GRAD_ESTIMATORS
LEGACY_GRAD_MODES = {"rate": "bptr"}  # the older eval.grad_mode values


@functools.lru_cache(maxsize=1)
def grad_defaults() -> dict:
    """The defaults of ``grad`` from the config schema (``$defs.grad_spec``), their single home."""
    from spkrobust.config.schema import defaults

    return defaults("grad_spec")


@dataclass(frozen=True)
class GradSpec:
    mode: str = "bptt"
    surrogate: str | None = None
    width: float = 1.0
    gamma: float | tuple = 1.0  # a tuple: several γ (an ensemble expands it, a single attack searches it)
    shape: str | None = None  # assg's shape, a, relax, beta1, beta2 (None: unset, GradSpec("bptr") etc.)
    a: float | None = None
    relax: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    members: tuple | None = None  # mix: the member GradSpecs
    combine: str | None = None

    @property
    def is_default(self) -> bool:
        """True when the model's own backward pass (training surrogate, BPTT) is meant."""
        return self.mode == "bptt" and self.surrogate is None

    def label(self) -> str:
        if self.mode == "bptt":
            return "bptt" if self.surrogate is None else f"bptt-{self.surrogate}-w{self.width:g}"
        if self.mode == "hart":
            g = self.gamma if isinstance(self.gamma, tuple) else (self.gamma,)
            return "hart-g" + ",".join(f"{v:g}" for v in g)
        if self.mode == "assg":
            d = grad_defaults()
            extra = "".join(f"-{k}{getattr(self, k):g}" for k in ("relax", "beta1", "beta2") if getattr(self, k) != d[k])
            return f"assg-{self.shape}-a{self.a:g}{extra}"
        if self.mode == "mix":
            return f"mix-{self.combine}[" + "+".join(m.label() for m in self.members) + "]"
        return self.mode

    def as_dict(self) -> dict:
        """Plain lists and dicts (YAML/JSON-safe); :func:`parse_grad` reads it back."""
        d = {k: v for k, v in asdict(self).items() if v is not None or k == "surrogate"}
        if isinstance(self.gamma, tuple):
            d["gamma"] = list(self.gamma)
        if self.members is not None:
            d["members"] = [m.as_dict() for m in self.members]
        return d


def _positive(v, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise UserError(f"{key}: must be a number > 0, got {v!r}")
    return float(v)


def _in_range(v, key: str, lo: float, hi: float, lo_open: bool) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (v > lo if lo_open else v >= lo) and v < hi
    if not ok:
        raise UserError(f"{key}: must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}), got {v!r}")
    return float(v)


def parse_grad(value: Any, key: str = "grad") -> GradSpec:
    """``None`` / a mode name / ``{mode, surrogate, width, gamma, shape, a, relax, beta1, beta2,
    members, combine}`` → :class:`GradSpec` (defaults from the schema); bad values raise a one-line
    :class:`UserError` naming ``key``."""
    if isinstance(value, GradSpec):
        return value
    if value is None:
        value = {}
    if isinstance(value, str):
        value = {"mode": value}
    if not isinstance(value, dict):
        raise UserError(f"{key}: must be a mode name or a mapping {{mode, surrogate, width, gamma}}, got {value!r}")
    defaults = grad_defaults()
    allowed = [*defaults, "members"]
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise UserError(f"{key}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    p = {**defaults, **{k: v for k, v in value.items() if v is not None or k == "surrogate"}}
    mode = LEGACY_GRAD_MODES.get(p["mode"], p["mode"])
    if mode not in MODES:
        raise UserError(f"{key}.mode: {p['mode']!r} is not one of {', '.join(MODES)}")
    if p["surrogate"] is not None and p["surrogate"] not in ATTACK_SURROGATES:
        raise UserError(f"{key}.surrogate: {p['surrogate']!r} is not one of {', '.join(ATTACK_SURROGATES)} (or null)")
    if p["surrogate"] is not None and mode != "bptt":
        raise UserError(f"{key}.surrogate: only mode bptt takes an attack-time surrogate, not {mode}")
    width = _positive(p["width"], f"{key}.width")
    gamma = p["gamma"]
    if isinstance(gamma, (list, tuple)):
        if not gamma:
            raise UserError(f"{key}.gamma: a list of γ must not be empty")
        gamma = tuple(_positive(g, f"{key}.gamma") for g in gamma)
        if mode != "hart":
            raise UserError(f"{key}.gamma: a list of γ is for mode hart only, not {mode}")
        gamma = gamma[0] if len(gamma) == 1 else gamma
    else:
        gamma = _positive(gamma, f"{key}.gamma")
    if p["shape"] not in ASSG_SHAPES:
        raise UserError(f"{key}.shape: {p['shape']!r} is not one of {', '.join(ASSG_SHAPES)}")
    a = _in_range(p["a"], f"{key}.a", 0.0, 0.5, True)
    relax = _in_range(p["relax"], f"{key}.relax", 0.0, math.inf, False)
    b1, b2 = (_in_range(p[k], f"{key}.{k}", 0.0, 1.0, False) for k in ("beta1", "beta2"))
    if p["combine"] not in GRAD_COMBINE:
        raise UserError(f"{key}.combine: {p['combine']!r} is not one of {', '.join(GRAD_COMBINE)}")
    members = None
    if mode == "mix":
        ms = p.get("members")
        if not isinstance(ms, (list, tuple)) or len(ms) < 2:
            raise UserError(f"{key}.members: mode mix needs a list of at least 2 estimators")
        members = tuple(parse_grad(m, f"{key}.members[{i}]") for i, m in enumerate(ms))
        if any(m.mode == "mix" for m in members):
            raise UserError(f"{key}.members: a mix does not nest")
        if any(isinstance(m.gamma, tuple) for m in members):
            raise UserError(f"{key}.members: a member's gamma must be one number")
    elif p.get("members") is not None:
        raise UserError(f"{key}.members: only mode mix takes members, not {mode}")
    return GradSpec(mode, p["surrogate"], width, gamma, p["shape"], a, relax, b1, b2, members, p["combine"])



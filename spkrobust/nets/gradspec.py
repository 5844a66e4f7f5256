"""The ``grad`` value of a gradient attack: :class:`GradSpec`, its parsing against the schema
(``$defs.grad_spec`` holds the defaults) and its label.  What each mode computes is
:mod:`spkrobust.nets.estimators`."""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

from spkrobust.config.vocab import ASSG_SHAPES, ATTACK_SURROGATES, GRAD_COMBINE, GRAD_ESTIMATORS, GRAD_MODE_ESTIMATORS
from spkrobust.errors import UserError

MODES = GRAD_ESTIMATORS
LISTABLE = {"hart": "gamma", "assg": "a"}  # the parameter a mode may list (an ensemble expands it, an attack searches it)
# eval.grad_mode values that name an estimator (rate -> bptr): their one home is the vocab
LEGACY_GRAD_MODES = {k: v for k, v in GRAD_MODE_ESTIMATORS.items() if v}


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
    gamma: float | tuple = 1.0  # a tuple: several γ (LISTABLE: an ensemble expands it, a single attack searches it)
    shape: str | None = None  # assg's shape, a, relax, beta1, beta2 (None: unset, GradSpec("bptr") etc.)
    a: float | tuple | None = None  # a tuple: several a (LISTABLE)
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
            return "hart-g" + _values(self.gamma)
        if self.mode == "assg":
            d = grad_defaults()
            extra = "".join(f"-{k}{getattr(self, k):g}" for k in ("relax", "beta1", "beta2") if getattr(self, k) != d[k])
            return f"assg-{self.shape}-a{_values(self.a)}{extra}"
        if self.mode == "mix":
            return f"mix-{self.combine}[" + "+".join(m.label() for m in self.members) + "]"
        return self.mode

    def as_dict(self) -> dict:
        """Plain lists and dicts (YAML/JSON-safe); :func:`parse_grad` reads it back."""
        d = {k: v for k, v in asdict(self).items() if v is not None or k == "surrogate"}
        for k in LISTABLE.values():
            if isinstance(d.get(k), tuple):
                d[k] = list(d[k])
        if self.members is not None:
            d["members"] = [m.as_dict() for m in self.members]
        return d


def _values(v) -> str:
    return ",".join(f"{x:g}" for x in (v if isinstance(v, tuple) else (v,)))


def _one_or_list(v, key: str, mode: str, check) -> float | tuple:
    """A number, or (for the mode's LISTABLE key) a non-empty list of numbers → tuple (one item: the number)."""
    if not isinstance(v, (list, tuple)):
        return check(v, key)
    name = key.rsplit(".", 1)[-1]
    if LISTABLE.get(mode) != name:
        allowed = ", ".join(f"{k} ({m})" for m, k in LISTABLE.items())
        raise UserError(f"{key}: a list is allowed only for {allowed}, not for mode {mode}")
    if not v:
        raise UserError(f"{key}: the list must not be empty")
    t = tuple(check(x, key) for x in v)
    return t[0] if len(t) == 1 else t


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
    gamma = _one_or_list(p["gamma"], f"{key}.gamma", mode, _positive)
    if p["shape"] not in ASSG_SHAPES:
        raise UserError(f"{key}.shape: {p['shape']!r} is not one of {', '.join(ASSG_SHAPES)}")
    a = _one_or_list(p["a"], f"{key}.a", mode, lambda v, k: _in_range(v, k, 0.0, 0.5, True))
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
        if any(isinstance(getattr(m, k), tuple) for m in members for k in LISTABLE.values()):
            raise UserError(f"{key}.members: a member's {' / '.join(LISTABLE.values())} must be one number")
    elif p.get("members") is not None:
        raise UserError(f"{key}.members: only mode mix takes members, not {mode}")
    return GradSpec(mode, p["surrogate"], width, gamma, p["shape"], a, relax, b1, b2, members, p["combine"])



"""What every CLI stage shares: its ``--cfg`` (one reader, one-line errors), the typed frozen
options of the evaluation and attack stages, and the device.

The pipeline passes each stage the slice of the schema-filled config it depends on
(:func:`options_slice`, used by ``spkrobust.config.expand``); a stage builds its frozen options from it
with :meth:`Options.from_cfg`.  A key missing from ``--cfg`` (a stage run by hand) takes the
schema's default: defaults live only in ``workflow/schemas/config.schema.yaml``.  Torch is imported
only by :func:`resolve_device`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from spkrobust.errors import UserError


def read_cfg(text: str, what: str = "--cfg") -> dict:
    """A stage's JSON argument as a dict; bad JSON is one line naming the argument."""
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{what}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{what}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def resolve_device(name: str | None = "auto"):
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device: {name!r} requested but no CUDA GPU is available; use 'auto' or 'cpu'")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"device: {name!r} is not one of auto, cpu, cuda")
    return torch.device(name)


def require(cfg: dict, *keys: str, what: str = "--cfg") -> list:
    """The values of ``keys`` in a stage's config slice; a missing one is one line naming it."""
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise UserError(f"{what}: missing {', '.join(missing)} (the pipeline passes the config slice)")
    return [cfg[k] for k in keys]


@dataclass(frozen=True)
class Options:
    """Base of the stage options: the top-level ``seed`` and ``device``; the fields of a subclass
    are keys of the config's ``eval`` section (their schema defines type, range and default)."""

    seed: int
    device: str

    @classmethod
    def eval_keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("seed", "device"))

    @classmethod
    def from_cfg(cls, cfg: dict) -> "Options":
        """From a stage's ``--cfg`` (a slice of the config); missing keys take the schema defaults,
        wrong values are a one-line :class:`~spkrobust.errors.ConfigError` naming the key."""
        from spkrobust.config.schema import check_schema, fill_defaults, load_schema

        schema = load_schema()
        keys = cls.eval_keys()
        sub = {"$defs": schema.get("$defs", {}), "type": "object", "properties": {
            "seed": schema["properties"]["seed"], "device": schema["properties"]["device"],
            "eval": {"type": "object", "default": {},
                     "properties": {k: schema["properties"]["eval"]["properties"][k] for k in keys}}}}
        ev = cfg.get("eval", {})
        inst = {k: cfg[k] for k in ("seed", "device") if k in cfg}
        inst["eval"] = {k: ev[k] for k in keys if k in ev} if isinstance(ev, dict) else ev
        check_schema(inst, sub)
        fill_defaults(inst, sub)
        return cls(seed=inst["seed"], device=inst["device"], **inst["eval"])


@dataclass(frozen=True)
class EvalOptions(Options):
    """``clean`` and ``evaluate``: forward passes per stochastic target, evaluation batch."""

    repeats: int
    batch_size: int


@dataclass(frozen=True)
class AttackOptions(Options):
    """``grad`` and ``craft``: EOT draws per gradient, crafting batch, SNN backward pass."""

    eot_samples: int
    attack_batch_size: int
    grad_mode: str


@dataclass(frozen=True)
class Bounds:
    """How an inference stage cuts its work to fit a memory budget: ``micro_batch`` images and
    ``time_chunk`` time steps at a time (None: no cut). Chosen per job by the plan
    (``spkrobust.tools.jobs``); the results do not depend on them (``spkrobust.nets.inference``).
    Stage arguments, not config keys: they change where the work is cut, not what is computed."""

    micro_batch: int | None = None
    time_chunk: int | None = None

    FLAGS = (("micro_batch", "--micro-batch", "images per forward pass"),
             ("time_chunk", "--time-chunk", "SNN time steps per forward pass, the membrane carried across"))

    @classmethod
    def add_args(cls, p) -> None:
        """Add ``--micro-batch`` and ``--time-chunk`` to a stage's argparse parser."""
        for name, flag, what in cls.FLAGS:
            p.add_argument(flag, dest=name, type=int, default=None,
                           help=f"{what} (memory bound; the plan's value in the workflow; default: no cut)")

    @classmethod
    def from_args(cls, args) -> "Bounds":
        vals = {}
        for name, flag, _ in cls.FLAGS:
            v = getattr(args, name, None)
            if v is not None and int(v) < 1:
                raise UserError(f"{flag} must be a positive integer, got {v}")
            vals[name] = None if v is None else int(v)
        return cls(**vals)


def options_slice(cfg: dict, cls: type[Options]) -> dict[str, Any]:
    """The part of a (schema-filled) config that ``cls`` reads: what the stage's jobs depend on."""
    ev = cfg.get("eval") or {}
    return {"seed": cfg["seed"], "device": cfg["device"],
            "eval": {k: ev[k] for k in cls.eval_keys() if k in ev}}

"""Config validation, run ONCE by the Snakefile before any job and by ``spkrobust validate``.

:func:`validate_config` checks the config against ``workflow/schemas/config.schema.yaml`` -- the
one validator of types, ranges, allowed values and defaults -- then fills in the schema's
defaults, then runs the cross-key checks the schema cannot express:

* the ``from:`` graph: the parent exists (a sweep member by its full name), has an allowed kind,
  no cycle, an ``ann`` has none, a ``convert`` has one;
* grid ``sources``/``targets`` name models; ``target_replicas`` exist; the grid is not empty;
* eps labels are distinct and fraction strings lie in [0, 1] (the schema checks only their form);
  the same for a fraction or ``k*eps`` ``alpha``;
* ``data.calib_size <= data.train_size``;
* an ensemble member ``{set: <attack>}`` names an attack of ``attacks`` that is not an ensemble.

Every failure is a :class:`~spkrobust.errors.ConfigError` with ONE line starting with the key path
(``models.snn_bp.T: must be an integer >= 1, got 0``).  Pure Python (no torch).
"""
from __future__ import annotations

from pathlib import Path

from spkrobust.errors import ConfigError
from spkrobust.config.schema import SCHEMA, _show, check_schema, fill_defaults, load_schema
from spkrobust.config.expand import (eps_label, expand_models, from_chain, grid, load_configs, model_replicas,
                                     parse_alpha, parse_eps)
from spkrobust.config.vocab import PARENT_KINDS


def _fail(path: str, msg: str) -> None:
    raise ConfigError(f"{path}: {msg}")


def _a(kind: str) -> str:
    return ("a " if kind == "convert" else "an ") + kind


# ---- cross-key checks ---------------------------------------------------------------------------

def _check_from_graph(models: dict) -> None:
    known = ", ".join(map(str, models))
    parent_of: dict[str, str | None] = {}
    for name, spec in models.items():
        p = f"models.{name}.from"
        kind, parent = spec["kind"], spec.get("from")
        if parent is None:
            if kind == "convert":
                _fail(p, f"missing: a convert model needs the ann it converts (known models: {known})")
            parent_of[name] = None
            continue
        if kind == "ann":
            _fail(p, f"an ann is trained from scratch and has no parent; remove `from: {parent}`")
        base = parent if parent in models else parent.split("-", 1)[0]
        if base not in models:
            _fail(p, f"{parent!r} is not a model (known: {known})")
        if base == name:
            _fail(p, f"a model cannot come from itself ({name} -> {name})")
        pkind = models[base]["kind"]
        if pkind not in PARENT_KINDS[kind]:
            _fail(p, f"{parent!r} is {_a(pkind)}, but {_a(kind)} must come from "
                     f"{' or '.join(_a(k) for k in PARENT_KINDS[kind])}")
        parent_of[name] = base
    for name in models:
        from_chain(parent_of, name)


def _check_member_parents(cfg: dict) -> None:
    """A ``from:`` naming a sweep member (``snn_conv-T16``) must name one that exists."""

    models = cfg["models"]
    plain = {n: (dict(s, **{"from": s["from"].split("-", 1)[0]})
                 if isinstance(s.get("from"), str) and s["from"] not in models else s)
             for n, s in models.items()}
    expanded = expand_models({**cfg, "models": plain})
    for name, spec in models.items():
        parent = spec.get("from")
        if parent is None or parent in models:
            continue
        base = parent.split("-", 1)[0]
        members = [n for n, m in expanded.items() if m["base"] == base]
        if parent not in members:
            _fail(f"models.{name}.from", f"{parent!r} is not a member of {base} (members: {', '.join(members)})")


def _check_pixel_values(cfg: dict) -> None:
    """Fraction strings in range (the schema checks their form), distinct eps labels."""

    labels: dict[str, int] = {}
    for i, e in enumerate(cfg["eps"]):
        parse_eps(e, f"eps[{i}]")
        label = eps_label(e)
        if label in labels:
            _fail(f"eps[{i}]", f"{e!r} repeats eps[{labels[label]}] (label {label!r})")
        labels[label] = i
    for name, spec in cfg["attacks"].items():
        if "alpha" in spec and spec["alpha"] is not None:
            parse_alpha(spec["alpha"], 1.0, f"attacks.{name}.alpha")


def _check_ensemble_sets(cfg: dict) -> None:
    attacks = cfg["attacks"]
    for name, spec in attacks.items():
        members = spec.get("members") if spec["type"] == "ensemble" else None
        for i, m in enumerate(members or []):
            if "set" not in m:
                continue
            ref, p = m["set"], f"attacks.{name}.members[{i}].set"
            if ref not in attacks:
                _fail(p, f"{ref!r} is not an attack (known: {', '.join(attacks)})")
            if attacks[ref]["type"] == "ensemble":
                _fail(p, f"{ref!r} is an ensemble; a member reuses the set of a single attack")


def _check_grid(cfg: dict, expanded: dict) -> None:

    g = cfg["grid"]
    targets = list(expanded)
    for key in ("sources", "targets"):
        if g[key] == "all":
            continue
        names: list[str] = []
        for i, s in enumerate(g[key]):
            members = [s] if s in expanded else [n for n, m in expanded.items() if m["base"] == s]
            if not members:
                _fail(f"grid.{key}[{i}]", f"{_show(s)} is not a model (known: {', '.join(expanded)})")
            names.extend(members)
        if key == "targets":
            targets = names
    most = max(len(model_replicas(cfg, expanded[t])) for t in targets)
    for i, r in enumerate(g["target_replicas"]):
        if r > most:
            _fail(f"grid.target_replicas[{i}]", f"replica {r} does not exist: the targets have at most {most} "
                                                f"replica(s) (raise `replicas:` or drop it)")
    if not grid(cfg):
        _fail("grid", "selects no evaluation at all (check grid.sources, grid.targets, grid.target_replicas)")


def validate_config(cfg: dict, schema: str | Path | None = None) -> dict:
    """Check ``cfg`` and fill in the schema's defaults (in place; also returned).

    Raises :class:`ConfigError` (one line, key path first) unless ``cfg`` is a valid experiment."""

    sch = load_schema(schema)
    check_schema(cfg, sch)
    fill_defaults(cfg, sch)
    data = cfg["data"]
    if data["train_size"] is not None and data["calib_size"] > data["train_size"]:
        _fail("data.calib_size", f"{data['calib_size']} exceeds data.train_size {data['train_size']} "
                                 "(calibration images are taken from the training subset)")
    _check_from_graph(cfg["models"])
    _check_member_parents(cfg)
    _check_pixel_values(cfg)
    _check_ensemble_sets(cfg)
    _check_grid(cfg, expand_models(cfg))
    return cfg


# ---- CLI ----------------------------------------------------------------------------------------

def _configure(p) -> None:
    p.add_argument("--config", action="append", required=True, metavar="FILE",
                   help="YAML config file; repeat to merge several (later files win, like Snakemake)")
    p.add_argument("--schema", default=None, help=f"JSON schema (default: {SCHEMA.relative_to(SCHEMA.parents[2])})")


def _run(args) -> int:
    """Check config file(s) without running anything: one line naming the bad key, exit 2."""

    cfg = validate_config(load_configs(args.config), schema=args.schema)
    print(f"ok: {', '.join(args.config)}: {len(expand_models(cfg))} models, {len(grid(cfg))} evaluation records")
    return 0


CLI = {"validate": (_configure, _run)}

"""Config validation, run ONCE by the Snakefile before any job and by ``spkrobust validate``.

:func:`validate_config` checks the config against ``workflow/schemas/config.schema.yaml`` -- the
one validator of types, ranges, allowed values and defaults -- then fills in the schema's
defaults, then runs the cross-key checks the schema cannot express:

* the ``from:`` graph: the parent exists (a sweep member by its full name), has an allowed kind,
  no cycle, an ``ann`` has none, a ``convert`` has one;
* grid ``sources``/``targets`` name models; ``target_replicas`` exist; the grid is not empty;
* eps labels are distinct and fraction strings lie in [0, 1] (the schema checks only their form);
  the same for a fraction or ``k*eps`` ``alpha``;
* ``data.calib_size <= data.train_size``.

Every failure is a :class:`~spkrobust.errors.ConfigError` with ONE line starting with the key path
(``models.snn_bp.T: must be an integer >= 1, got 0``).  Pure Python (no torch).
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from spkrobust.errors import ConfigError, UserError
from spkrobust.vocab import PARENT_KINDS

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"

# keywords that move from a value to a part of it (the key path grows)
_INTO_VALUE = ("additionalProperties", "unevaluatedProperties", "items", "propertyNames", "contains")
_UNKNOWN_KEY = ("additionalProperties", "unevaluatedProperties")


def _fail(path: str, msg: str) -> None:
    raise ConfigError(f"{path}: {msg}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _a(kind: str) -> str:
    return ("a " if kind == "convert" else "an ") + kind


# ---- the schema and its errors as one line ------------------------------------------------------

@functools.lru_cache(maxsize=4)
def load_schema(path: str | Path | None = None) -> dict:
    import yaml

    p = Path(path) if path is not None else SCHEMA
    if not p.is_file():
        raise UserError(f"{p}: config schema not found")
    return yaml.safe_load(p.read_text())


def _resolve(root: dict, node: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        target = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _schema_at(root: dict, schema_path) -> tuple[dict, str | None]:
    """The subschema that failed and the ``x-error`` that applies to the failing value (one given on
    the same value along the way: a ``$ref``'s target, a ``oneOf`` around the branches)."""
    node, xerr = _resolve(root, root), root.get("x-error")
    parts = list(schema_path)[:-1]
    i = 0
    while i < len(parts):
        k = parts[i]
        if k in ("properties", "patternProperties", "$defs"):
            node, i = node[k][parts[i + 1]], i + 2
            xerr = None
        elif k in ("allOf", "anyOf", "oneOf", "prefixItems"):
            node, i = node[k][parts[i + 1]], i + 2
        else:
            node, i = node[k], i + 1
            if k in _INTO_VALUE:
                xerr = None
        if isinstance(node, dict) and "x-error" in node:
            xerr = node["x-error"]
        node = _resolve(root, node)
        if "x-error" in node and xerr is None:
            xerr = node["x-error"]
    return node, xerr


def _key_path(parts, where: str = "") -> str:
    key = where
    for part in parts:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "config"


def _interval(s: dict) -> str:
    lo = ("(", s["exclusiveMinimum"]) if "exclusiveMinimum" in s else ("[", s.get("minimum"))
    hi = (")", s["exclusiveMaximum"]) if "exclusiveMaximum" in s else ("]", s.get("maximum"))
    if hi[1] is None:
        return f"{'>' if lo[0] == '(' else '>='} {lo[1]:g}" if lo[1] is not None else ""
    if lo[1] is None:
        return f"{'<' if hi[0] == ')' else '<='} {hi[1]:g}"
    return f"in {lo[0]}{lo[1]:g}, {hi[1]:g}{hi[0]}"


def _what(s: dict) -> str:
    types = s.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if "integer" in types:
        return f"must be an integer {_interval(s)}".rstrip()
    if "number" in types:
        return f"must be a number {_interval(s)}".rstrip()
    if "boolean" in types:
        return "must be true or false"
    if "object" in types:
        return "must be a mapping"
    if "array" in types:
        return "must be a non-empty list" if s.get("minItems") else "must be a list"
    if "string" in types:
        return "must be a non-empty string" if s.get("minLength") else "must be a string"
    return "is not valid"


def _allowed_keys(root: dict, node: dict, instance: dict, validator_cls) -> list[str]:
    keys = list(node.get("properties", {}))
    for part in node.get("allOf", []):
        if "if" in part and validator_cls(part["if"]).is_valid(instance):
            keys += list(_resolve(root, part.get("then", {})).get("properties", {}))
    return keys


def _message(err, root: dict, validator_cls, where: str = "") -> str:
    node, xerr = _schema_at(root, err.absolute_schema_path)
    path = list(err.absolute_path)
    v, value = err.validator, err.instance
    if v in _UNKNOWN_KEY:
        allowed = _allowed_keys(root, node, value, validator_cls)
        extra = next(k for k in value if k not in allowed)
        shown = [k for k in allowed if k not in ("kind", "type")]
        what = node.get("x-unknown-key", "unknown key").format_map(
            {k: value.get(k) for k in ("kind", "type")})
        return f"{_key_path(path + [extra], where)}: {what}; allowed: {', '.join(shown) or 'none'}"
    if v == "required":
        missing = next(k for k in err.validator_value if k not in value)
        sub = _resolve(root, node.get("properties", {}).get(missing, {}))
        extra = f"; allowed: {', '.join(sub['enum'])}" if "enum" in sub else ""
        return f"{_key_path(path + [missing], where)}: missing (required){extra}"
    if v == "propertyNames" or "propertyNames" in list(err.absolute_schema_path)[-3:]:
        return f"{_key_path(path + [value], where)}: {xerr or 'not an allowed name'}"
    if v == "uniqueItems":
        seen = []
        dup = next(x for x in value if x in seen or seen.append(x))
        return f"{_key_path(path, where)}: {dup!r} is listed twice"
    if xerr is not None:
        return f"{_key_path(path, where)}: {xerr}, got {_show(value)}"
    if v in ("enum", "const"):
        allowed = err.validator_value if v == "enum" else [err.validator_value]
        return f"{_key_path(path, where)}: {_show(value)} is not allowed; allowed: {', '.join(map(str, allowed))}"
    if v == "minProperties":
        return f"{_key_path(path, where)}: must have at least one entry"
    if v == "type" and "number" in err.validator_value:
        return f"{_key_path(path, where)}: must be a number, got {_show(value)}"
    if v in ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "minLength"):
        return f"{_key_path(path, where)}: {_what(node)}, got {_show(value)}"
    return f"{_key_path(path, where)}: {' '.join(err.message.split())[:160]}"


def check_schema(cfg: Any, schema: dict, where: str = "") -> None:
    """The schema's most relevant error, as one line naming the key path (below ``where``)."""
    import jsonschema
    from jsonschema.exceptions import best_match, relevance

    cls = jsonschema.validators.validator_for(schema)
    err = best_match(cls(schema).iter_errors(cfg),
                     key=lambda e: (e.validator != "unevaluatedProperties", *relevance(e)))
    if err is not None:
        raise ConfigError(_message(err, schema, cls, where))


def check_value(value: Any, definition: str, where: str) -> None:
    """``value`` against the schema's ``$defs/<definition>`` (e.g. a stage's ``--attack-cfg``)."""
    schema = load_schema()
    check_schema(value, {"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}, where)


def fill_defaults(cfg: dict, schema: dict, node: dict | None = None) -> dict:
    """Set every missing key that has a schema ``default`` (nested mappings too), in place."""
    node = _resolve(schema, schema if node is None else node)
    for key, sub in node.get("properties", {}).items():
        sub = _resolve(schema, sub)
        if key not in cfg and "default" in sub:
            cfg[key] = copy.deepcopy(sub["default"])
        if isinstance(cfg.get(key), dict) and "properties" in sub:
            fill_defaults(cfg[key], schema, sub)
    return cfg


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
        chain, cur = [name], parent_of[name]
        while cur is not None:
            if cur in chain:
                cyc = chain[chain.index(cur):] + [cur]
                _fail(f"models.{cyc[0]}.from", f"forms a cycle ({' -> '.join(cyc)})")
            chain.append(cur)
            cur = parent_of[cur]


def _check_member_parents(cfg: dict) -> None:
    """A ``from:`` naming a sweep member (``snn_conv-T16``) must name one that exists."""
    from spkrobust.config import expand_models

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
    from spkrobust.config import eps_label, parse_alpha, parse_eps

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


def _check_grid(cfg: dict, expanded: dict) -> None:
    from spkrobust.config import grid, model_replicas

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
    from spkrobust.config import expand_models

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
    _check_grid(cfg, expand_models(cfg))
    return cfg


# ---- CLI ----------------------------------------------------------------------------------------

def _merge(base: dict, new: dict) -> dict:
    """Recursive merge like Snakemake's for several --configfile: later files win, mappings merge."""
    out = dict(base)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_configs(paths) -> dict:
    import yaml

    from spkrobust.errors import FileProblem

    cfg: dict = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileProblem(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or type(e).__name__
            raise FileProblem(f"{path}: not valid YAML ({problem}{where})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise FileProblem(f"{path}: cannot read ({e})") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise FileProblem(f"{path}: must contain a YAML mapping of config keys, got {type(data).__name__}")
        cfg = _merge(cfg, data)
    return cfg


def _configure(p) -> None:
    p.add_argument("--config", action="append", required=True, metavar="FILE",
                   help="YAML config file; repeat to merge several (later files win, like Snakemake)")
    p.add_argument("--schema", default=None, help=f"JSON schema (default: {SCHEMA.relative_to(SCHEMA.parents[2])})")


def _run(args) -> int:
    """Check config file(s) without running anything: one line naming the bad key, exit 2."""
    from spkrobust.config import expand_models, grid

    cfg = validate_config(load_configs(args.config), schema=args.schema)
    print(f"ok: {', '.join(args.config)}: {len(expand_models(cfg))} models, {len(grid(cfg))} evaluation records")
    return 0


CLI = {"validate": (_configure, _run)}

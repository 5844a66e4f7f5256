"""The config schema (``workflow/schemas/config.schema.yaml``): load it, check a value against it
with its most relevant error as ONE line naming the key path, fill in its defaults.

The schema is the one validator of types, ranges, allowed values and defaults.  Two annotations of
its own shape the messages: ``x-error`` (the message when that value is wrong) and
``x-unknown-key`` (for a key a mapping does not have).  Pure Python (jsonschema, no torch).
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from spkrobust.errors import ConfigError, UserError

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

# keywords that move from a value to a part of it (the key path grows)
_INTO_VALUE = ("additionalProperties", "unevaluatedProperties", "items", "propertyNames", "contains")
_UNKNOWN_KEY = ("additionalProperties", "unevaluatedProperties")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
        shown = [k for k in allowed if k not in ("kind", "type", "name")]
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


def default(name: str, kind: str | None = None) -> Any:
    """The schema's default of a model value (``T``, ``neuron``, ``arch``...); with ``kind``, the
    default that kind's branch of ``$defs/model`` declares (a converted SNN's neuron is ``if``)."""
    schema = load_schema()
    node = schema["$defs"][name]
    for part in schema["$defs"]["model"]["allOf"] if kind else ():
        if part["if"]["properties"]["kind"].get("const") == kind:
            node = part["then"]["properties"].get(name, node)
    return copy.deepcopy(_resolve(schema, node)["default"])


def defaults(definition: str) -> dict:
    """``{key: default}`` of the properties of ``$defs/<definition>`` (e.g. ``ann_train``)."""
    schema = load_schema()
    props = _resolve(schema, schema["$defs"][definition]).get("properties", {})
    resolved = {k: _resolve(schema, sub) for k, sub in props.items()}
    return {k: copy.deepcopy(sub["default"]) for k, sub in resolved.items() if "default" in sub}


def attack_defaults(atype: str) -> dict[str, Any]:
    """A copy of :func:`_attack_defaults` (read once per process)."""
    return copy.deepcopy(_attack_defaults(atype))


@functools.lru_cache(maxsize=None)
def _attack_defaults(atype: str) -> dict[str, Any]:
    """``{parameter: default}`` of attack type ``atype``: every parameter its branch of
    ``$defs/attack`` declares, None where the schema gives no default (``eot_samples``: from
    ``eval.eot_samples``; rfgsm ``alpha``: eps/2; ``grad``: ``eval.grad_mode``; ensemble ``members``:
    required)."""
    schema = load_schema()
    for part in schema["$defs"]["attack"]["allOf"]:
        cond = part["if"]["properties"]["type"]
        if cond.get("const") == atype or atype in cond.get("enum", ()):
            props = part["then"].get("properties", {})
            return {k: copy.deepcopy(sub["default"] if "default" in sub else _resolve(schema, sub).get("default"))
                    for k, sub in props.items()}
    if atype in schema["$defs"]["attack"]["properties"]["type"]["enum"]:
        return {}  # a type without parameters (noise)
    raise UserError(f"attack type {atype!r} is not in the config schema")


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

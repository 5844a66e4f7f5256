"""Semantic config validation, run by the Snakefile before any job and by ``spkrobust validate``.

:func:`validate_config` raises :class:`~spkrobust.errors.ConfigError` with ONE line that starts
with the key path (``models.snn_bp.T: must be an integer >= 1, got 0``) and says what is allowed.
It checks, in this order:

1. top-level keys and every value the library reads (types, ranges, allowed names), including the
   parameters of each attack type and the keys of each model kind, so that a typo is an error and
   not a silently ignored key;
2. cross-key rules: ``from:`` names an existing model (no cycle), a ``convert`` comes from an
   ``ann``, an ``snn`` from an ``ann``/``convert``/``snn``; grid sources/targets exist;
   ``grid.target_replicas`` exist for some target; eps labels are distinct;
3. the JSON schema ``workflow/schemas/config.schema.yaml`` (when present), its first error turned
   into one line naming the key.

Pure Python (no torch): the Snakefile imports it, and dry-runs must stay fast.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

from spkrobust.errors import ConfigError, UserError

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"

DEVICES = ("auto", "cpu", "cuda")
DATASETS = ("fashion_mnist", "cifar10", "cifar100")
ARCHS = ("vgg5", "vgg9", "vgg11")
MODEL_KINDS = ("ann", "convert", "snn")
NEURONS = ("if", "lif")
ENCODERS = ("poisson", "poisson_unsigned", "direct")
METHODS = ("threshold", "max", "99.9%")
SURROGATES = ("linear", "sigmoid", "atan")
BACKENDS = ("auto", "torch", "cupy", "fused")
GRAD_MODES = ("bptt", "rate")
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

TOP_KEYS = ("seed", "device", "data_root", "datasets", "data", "replicas", "models", "attacks", "eps",
            "grid", "eval")
DATA_KEYS = ("train_size", "test_size", "calib_size")
GRID_KEYS = ("sources", "targets", "target_replicas")
EVAL_KEYS = ("repeats", "batch_size", "eot_samples", "attack_batch_size", "grad_mode", "attack_options")
ATTACK_OPTION_KEYS = ("eot_samples", "attack_batch_size", "grad_mode")

_COMMON_MODEL_KEYS = ("kind", "from", "replicas", "sweep")
_NEURON_KEYS = ("T", "neuron", "leak", "encoder", "surrogate", "backend")
MODEL_KEYS = {  # keys each kind reads (anything else would be silently ignored by the library)
    "ann": _COMMON_MODEL_KEYS + ("arch", "dropout", "train"),
    "convert": _COMMON_MODEL_KEYS + ("method", "scale") + _NEURON_KEYS,
    "snn": _COMMON_MODEL_KEYS + ("arch", "dropout", "train") + _NEURON_KEYS,
}
TRAIN_KEYS = {"ann": ("epochs", "lr", "batch_size", "momentum", "weight_decay", "train_images"),  # SGD
              "snn": ("epochs", "lr", "batch_size", "weight_decay", "train_images")}  # Adam
PARENT_KINDS = {"convert": ("ann",), "snn": ("ann", "convert", "snn")}

# parameters each attack type accepts (mirrors spkrobust.attacks.ATTACK_DEFAULTS, which imports torch)
ATTACK_PARAMS: dict[str, tuple[str, ...]] = {
    "fgsm": ("eot_samples",),
    "rfgsm": ("alpha", "eot_samples"),
    "pgd": ("steps", "alpha", "random_start", "eot_samples"),
    "eotpgd": ("steps", "alpha", "random_start", "eot_samples"),
    "apgd": ("steps", "n_restarts", "loss", "rho", "eot_samples"),
    "square": ("n_queries", "n_restarts", "p_init", "loss"),
    "noise": (),
    "apgdt": ("steps", "n_restarts", "rho", "target_classes", "eot_samples"),
    "ensemble": ("members", "stop_early", "eot_samples"),
}
GRAD_ATTACKS = ("fgsm", "rfgsm", "pgd", "eotpgd", "apgd", "apgdt")  # take `grad` (checked by the schema)
ATTACK_LOSSES = {"apgd": ("ce", "dlr"), "square": ("margin", "ce")}


def _fail(path: str, msg: str) -> None:
    raise ConfigError(f"{path}: {msg}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _a(kind: str) -> str:
    return ("a " if kind == "convert" else "an ") + kind


def _allowed(values) -> str:
    return ", ".join(str(v) for v in values)


def _one_of(path: str, value: Any, allowed) -> None:
    if not isinstance(value, str) or value not in allowed:
        _fail(path, f"{_show(value)} is not allowed; allowed: {_allowed(allowed)}")


def _int(path: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(path, f"must be an integer >= {minimum}, got {_show(value)}")
    return value


def _number(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(path, f"must be a number, got {_show(value)}")
    return float(value)


def _in_range(path: str, value: Any, lo: float, hi: float, lo_open: bool, hi_open: bool) -> float:
    v = _number(path, value)
    if (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        _fail(path, f"must be a number in {interval}, got {_show(value)}")
    return v


def _positive(path: str, value: Any, allow_zero: bool = False) -> float:
    v = _number(path, value)
    if v < 0 or (v == 0 and not allow_zero):
        _fail(path, f"must be a number {'>=' if allow_zero else '>'} 0, got {_show(value)}")
    return v


def _pixel(path: str, value: Any, lo_open: bool = False) -> float:
    """A pixel-unit value: a number or an ``"a/b"`` string, in [0, 1] (or (0, 1])."""
    interval = f"{'(' if lo_open else '['}0, 1]"
    what = f"must be a number or 'a/b' fraction in {interval} (pixel units, e.g. 8/255)"
    if isinstance(value, bool):
        _fail(path, f"{what}, got {_show(value)}")
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str):
        try:
            v = float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            _fail(path, f"{what}, got {_show(value)}")
    else:
        _fail(path, f"{what}, got {_show(value)}")
    if not math.isfinite(v) or v < 0 or v > 1 or (lo_open and v == 0):
        _fail(path, f"{what}, got {_show(value)}")
    return v


def _mapping(path: str, value: Any, allowed_keys=None, what: str = "a mapping") -> dict:
    if not isinstance(value, dict):
        _fail(path, f"must be {what}, got {_show(value)}")
    if allowed_keys is not None:
        for k in value:
            if k not in allowed_keys:
                _fail(f"{path}.{k}" if path else str(k), f"unknown key; allowed: {_allowed(allowed_keys)}")
    return value


def _known_keys(path: str, value: dict, allowed, why: str) -> None:
    for k in value:
        if k not in allowed:
            _fail(f"{path}.{k}", f"unknown key {why}; allowed: {_allowed(allowed)}")


# ---- sections -----------------------------------------------------------------------------------

def _check_top(cfg: dict) -> None:
    _mapping("config", cfg, what="a mapping of keys (a YAML mapping at the top of the file)")
    for k in cfg:
        if k not in TOP_KEYS:
            _fail(str(k), f"unknown top-level key; allowed: {_allowed(TOP_KEYS)}")
    for k in ("datasets", "models", "attacks", "eps"):
        if k not in cfg or cfg[k] is None:
            _fail(k, "missing (required)")
    if "seed" in cfg:
        _int("seed", cfg["seed"], minimum=0)
    if "device" in cfg:
        _one_of("device", cfg["device"], DEVICES)
    if "data_root" in cfg and (not isinstance(cfg["data_root"], str) or not cfg["data_root"]):
        _fail("data_root", f"must be a directory path (a non-empty string), got {_show(cfg['data_root'])}")
    ds = cfg["datasets"]
    if not isinstance(ds, list) or not ds:
        _fail("datasets", f"must be a non-empty list of {_allowed(DATASETS)}, got {_show(ds)}")
    for i, d in enumerate(ds):
        _one_of(f"datasets[{i}]", d, DATASETS)
        if d in ds[:i]:
            _fail(f"datasets[{i}]", f"{d!r} is listed twice")
    if "replicas" in cfg:
        _int("replicas", cfg["replicas"])


def _check_data(cfg: dict) -> None:
    data = cfg.get("data")
    if data is None:
        return
    _mapping("data", data, DATA_KEYS)
    for k in ("train_size", "test_size"):
        if data.get(k) is not None:
            _int(f"data.{k}", data[k])
    if "calib_size" in data:
        if data["calib_size"] is None:
            _fail("data.calib_size", "must be an integer >= 1, got None")
        _int("data.calib_size", data["calib_size"])
        if data.get("train_size") is not None and data["calib_size"] > data["train_size"]:
            _fail("data.calib_size", f"{data['calib_size']} exceeds data.train_size {data['train_size']} "
                                     "(calibration images are taken from the training subset)")


def _check_model_value(path: str, key: str, value: Any) -> None:
    """One (possibly swept) model value."""
    if key == "T":
        _int(path, value)
    elif key == "leak":
        _in_range(path, value, 0, 1, lo_open=True, hi_open=False)
    elif key == "neuron":
        _one_of(path, value, NEURONS)
    elif key == "encoder":
        _one_of(path, value, ENCODERS)
    elif key == "method":
        _one_of(path, value, METHODS)
    elif key == "scale":
        _positive(path, value)
    elif key == "surrogate":
        _one_of(path, value, SURROGATES)
    elif key == "backend":
        _one_of(path, value, BACKENDS)
    elif key == "arch":
        _one_of(path, value, ARCHS)
    elif key == "dropout":
        _in_range(path, value, 0, 1, lo_open=False, hi_open=True)
    elif key == "replicas":
        _int(path, value)


def _check_train(path: str, kind: str, train: Any) -> None:
    _mapping(path, train)
    _known_keys(path, train, TRAIN_KEYS[kind],
                f"for {_a(kind)} (trained with {'SGD' if kind == 'ann' else 'Adam'})")
    if "epochs" in train:
        _int(f"{path}.epochs", train["epochs"], minimum=0)
    if "batch_size" in train:
        _int(f"{path}.batch_size", train["batch_size"])
    if train.get("train_images") is not None:
        _int(f"{path}.train_images", train["train_images"])
    if "lr" in train:
        _positive(f"{path}.lr", train["lr"])
    if "momentum" in train:
        _in_range(f"{path}.momentum", train["momentum"], 0, 1, lo_open=False, hi_open=True)
    if "weight_decay" in train:
        _positive(f"{path}.weight_decay", train["weight_decay"], allow_zero=True)


def _check_models(cfg: dict) -> dict:
    """Per-model checks and the ``from`` graph; returns ``{base: parent base or None}``."""
    models = cfg["models"]
    if not isinstance(models, dict) or not models:
        _fail("models", "must be a mapping of at least one model name to its spec")
    known = ", ".join(map(str, models))
    for name, spec in models.items():
        p = f"models.{name}"
        if not isinstance(name, str) or not NAME_RE.match(name):
            _fail(p, "model names must start with a letter and contain only letters, digits and '_' "
                     "('-' separates sweep members)")
        if not isinstance(spec, dict):
            _fail(p, f"must be a mapping with at least 'kind' ({_allowed(MODEL_KINDS)}), got {_show(spec)}")
        if "kind" not in spec:
            _fail(f"{p}.kind", f"missing; allowed: {_allowed(MODEL_KINDS)}")
        kind = spec["kind"]
        _one_of(f"{p}.kind", kind, MODEL_KINDS)
        _known_keys(p, spec, MODEL_KEYS[kind], f"for kind {kind}")
        for key, value in spec.items():
            if key in ("kind", "from", "sweep", "train"):
                continue
            _check_model_value(f"{p}.{key}", key, value)
        if spec.get("train") is not None:
            _check_train(f"{p}.train", kind, spec["train"])
        sweep = spec.get("sweep")
        if sweep is not None:
            _mapping(f"{p}.sweep", sweep, what="a mapping of a key to a list of values")
            sweepable = [k for k in MODEL_KEYS[kind] if k in ("T", "leak", "neuron", "encoder", "method",
                                                              "scale", "surrogate")]
            for key, values in sweep.items():
                sp = f"{p}.sweep.{key}"
                if key not in sweepable:
                    _fail(sp, f"cannot be swept for kind {kind}; allowed: {_allowed(sweepable)}")
                if not isinstance(values, list) or not values:
                    _fail(sp, f"must be a non-empty list of values, got {_show(values)}")
                for i, v in enumerate(values):
                    _check_model_value(f"{sp}[{i}]", key, v)
                    if v in values[:i]:
                        _fail(f"{sp}[{i}]", f"{v!r} is listed twice")
    # the `from` graph between bases (a parent may be a sweep member: `snn_conv-T16`)
    parent_of: dict[str, str | None] = {}
    for name, spec in models.items():
        p = f"models.{name}.from"
        kind = spec["kind"]
        parent = spec.get("from")
        if parent is None:
            if kind == "convert":
                _fail(p, f"missing: a convert model needs the ann it converts (known models: {known})")
            parent_of[name] = None
            continue
        if not isinstance(parent, str):
            _fail(p, f"must be a model name, got {_show(parent)}")
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
    for name in models:  # cycles
        chain, cur = [name], parent_of[name]
        while cur is not None:
            if cur in chain:
                cyc = chain[chain.index(cur):] + [cur]
                _fail(f"models.{cyc[0]}.from", f"forms a cycle ({' -> '.join(cyc)})")
            chain.append(cur)
            cur = parent_of[cur]
    return parent_of


def _check_member_parents(cfg: dict) -> None:
    """A ``from:`` naming a sweep member (``snn_conv-T16``) must name one that exists."""
    from spkrobust.config import expand_models

    models = cfg["models"]
    # the members of each base do not depend on its children: expand with member parents -> bases
    plain = {n: (dict(s, **{"from": s["from"].split("-", 1)[0]})
                 if isinstance(s.get("from"), str) and s["from"] not in models else s)
             for n, s in models.items()}
    expanded = expand_models({**cfg, "models": plain})
    for name, spec in models.items():
        parent = spec.get("from")
        if not isinstance(parent, str) or parent in models:
            continue
        base = parent.split("-", 1)[0]
        members = [n for n, m in expanded.items() if m["base"] == base]
        if parent not in members:
            _fail(f"models.{name}.from", f"{parent!r} is not a member of {base} (members: {', '.join(members)})")


def _check_attacks(cfg: dict) -> None:
    attacks = cfg["attacks"]
    if not isinstance(attacks, dict) or not attacks:
        _fail("attacks", "must be a mapping of at least one attack name to {type: ..., params}")
    for name, spec in attacks.items():
        p = f"attacks.{name}"
        if not isinstance(name, str) or not NAME_RE.match(name):
            _fail(p, "attack names must start with a letter and contain only letters, digits and '_'")
        if not isinstance(spec, dict):
            _fail(p, f"must be a mapping with a 'type' ({_allowed(ATTACK_PARAMS)}), got {_show(spec)}")
        if "type" not in spec:
            _fail(f"{p}.type", f"missing; allowed: {_allowed(ATTACK_PARAMS)}")
        atype = spec["type"]
        _one_of(f"{p}.type", atype, ATTACK_PARAMS)
        allowed = ATTACK_PARAMS[atype]
        for key, value in spec.items():
            if key == "type" or (key == "grad" and atype in GRAD_ATTACKS):
                continue
            kp = f"{p}.{key}"
            if key not in allowed:
                _fail(kp, f"not a parameter of {atype}; allowed: {_allowed(allowed) or 'none'}")
            if key in ("steps", "n_restarts", "n_queries", "eot_samples", "target_classes"):
                _int(kp, value)
            elif key == "random_start":
                if not isinstance(value, bool):
                    _fail(kp, f"must be true or false, got {_show(value)}")
            elif key == "alpha":
                if atype in ("pgd", "eotpgd") and isinstance(value, str) and value.replace(" ", "").endswith("*eps"):
                    factor = value.replace(" ", "")[:-4]
                    try:
                        f = float(Fraction(factor))
                    except (ValueError, ZeroDivisionError):
                        f = -1.0
                    if not math.isfinite(f) or f <= 0:
                        _fail(kp, f"relative step must be 'k*eps' with a number k > 0, got {_show(value)}")
                else:
                    _pixel(kp, value, lo_open=True)
            elif key == "loss":
                _one_of(kp, value, ATTACK_LOSSES[atype])
            elif key == "rho":
                _in_range(kp, value, 0, 1, lo_open=True, hi_open=True)
            elif key == "p_init":
                _in_range(kp, value, 0, 1, lo_open=True, hi_open=False)


def _check_eps(cfg: dict) -> None:
    from spkrobust.config import eps_label

    eps = cfg["eps"]
    if not isinstance(eps, list) or not eps:
        _fail("eps", f"must be a non-empty list of numbers or 'a/b' fractions in [0, 1], got {_show(eps)}")
    labels: dict[str, int] = {}
    for i, e in enumerate(eps):
        _pixel(f"eps[{i}]", e)
        label = eps_label(e)
        if label in labels:
            _fail(f"eps[{i}]", f"{e!r} repeats eps[{labels[label]}] (label {label!r})")
        labels[label] = i


def _check_eval(cfg: dict) -> None:
    ev = cfg.get("eval")
    if ev is None:
        return
    _mapping("eval", ev, EVAL_KEYS)
    for key in ("repeats", "batch_size", "eot_samples", "attack_batch_size"):
        if ev.get(key) is not None:
            _int(f"eval.{key}", ev[key])
    if ev.get("grad_mode") is not None:
        _one_of("eval.grad_mode", ev["grad_mode"], GRAD_MODES)
    opts = ev.get("attack_options")
    if opts is not None:
        _mapping("eval.attack_options", opts, ATTACK_OPTION_KEYS)
        for key in ("eot_samples", "attack_batch_size"):
            if opts.get(key) is not None:
                _int(f"eval.attack_options.{key}", opts[key])
        if opts.get("grad_mode") is not None:
            _one_of("eval.attack_options.grad_mode", opts["grad_mode"], GRAD_MODES)


def _check_grid(cfg: dict, expanded: dict) -> None:
    from spkrobust.config import model_replicas

    g = cfg.get("grid")
    if g is None:
        g = {}
    _mapping("grid", g, GRID_KEYS)
    selected: dict[str, list[str]] = {}
    for key in ("sources", "targets"):
        sel = g.get(key, "all")
        p = f"grid.{key}"
        if sel in (None, "all"):
            selected[key] = list(expanded)
            continue
        if not isinstance(sel, list) or not sel:
            _fail(p, f"must be 'all' or a non-empty list of model names, got {_show(sel)}")
        names: list[str] = []
        for i, s in enumerate(sel):
            members = [s] if s in expanded else [n for n, m in expanded.items() if m["base"] == s]
            if not isinstance(s, str) or not members:
                _fail(f"{p}[{i}]", f"{_show(s)} is not a model (known: {', '.join(expanded)})")
            names.extend(members)
        selected[key] = names
    reps = g.get("target_replicas", [1])
    if not isinstance(reps, list) or not reps:
        _fail("grid.target_replicas", f"must be a non-empty list of replica numbers (1-based), got {_show(reps)}")
    most = max(len(model_replicas(cfg, expanded[t])) for t in selected["targets"])
    for i, r in enumerate(reps):
        _int(f"grid.target_replicas[{i}]", r)
        if r in reps[:i]:
            _fail(f"grid.target_replicas[{i}]", f"replica {r} is listed twice")
        if r > most:
            _fail(f"grid.target_replicas[{i}]", f"replica {r} does not exist: the targets have at most {most} "
                                                f"replica(s) (raise `replicas:` or drop it)")


def _check_schema(cfg: dict, schema_path: str | Path | None) -> None:
    """The JSON schema, its first (best) error as one line naming the key path."""
    path = Path(schema_path) if schema_path is not None else SCHEMA
    if not path.exists():
        if schema_path is not None:
            raise UserError(f"{path}: config schema not found")
        return
    try:
        import jsonschema
        import yaml
    except ImportError:  # pragma: no cover - both come with Snakemake
        return
    schema = yaml.safe_load(path.read_text())
    cls = jsonschema.validators.validator_for(schema)
    err = jsonschema.exceptions.best_match(cls(schema).iter_errors(cfg))
    if err is None:
        return
    key = ""
    for part in err.absolute_path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    msg = " ".join(err.message.split())
    if len(msg) > 160:
        msg = msg[:157] + "..."
    raise ConfigError(f"{key or 'config'}: {msg} (schema {path.name}: {'/'.join(map(str, err.schema_path))})")


# ---- entry point --------------------------------------------------------------------------------

def validate_config(cfg: dict, schema: str | Path | None = None) -> None:
    """Raise :class:`ConfigError` (one line, key path first) unless ``cfg`` is a valid experiment."""
    from spkrobust.config import expand_models, grid

    _check_top(cfg)
    _check_data(cfg)
    _check_models(cfg)
    _check_attacks(cfg)
    _check_eps(cfg)
    _check_eval(cfg)
    _check_member_parents(cfg)
    expanded = expand_models(cfg)
    _check_grid(cfg, expanded)
    if not grid(cfg):
        _fail("grid", "selects no evaluation at all (check grid.sources, grid.targets, grid.target_replicas)")
    _check_schema(cfg, schema)


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

    cfg = load_configs(args.config)
    validate_config(cfg, schema=args.schema)
    print(f"ok: {', '.join(args.config)}: {len(expand_models(cfg))} models, {len(grid(cfg))} evaluation records")
    return 0


CLI = {"validate": (_configure, _run)}

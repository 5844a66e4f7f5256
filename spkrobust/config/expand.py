"""Config expansion shared by the Snakefile and the library (imports no torch: dry-runs stay fast).

Every function takes the config as :func:`spkrobust.config.validate.validate_config` leaves it: checked
and filled with the schema's defaults (so no default is restated here).

* :func:`expand_models` turns the ``models:`` section (with sweeps) into resolved model specs;
* :func:`parse_eps` / :func:`eps_label` / :func:`eps_display` handle epsilons written as numbers or ``"a/b"`` strings;
* :func:`model_seed` gives each replica its seed;
* :func:`grid` enumerates every (dataset, source, replica, attack, eps, target, replica) cell;
* ``*_slice`` functions give the part of the config a stage depends on (Snakemake ``params:``),
  so that editing one part reruns only the jobs that depend on it.
"""
from __future__ import annotations

import itertools
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

from spkrobust.errors import ConfigError, FileProblem
from spkrobust.config.vocab import SWEEPABLE

# keys whose value is not part of a model's identity for training (kept out of the param slices)
_NON_TRAINING_KEYS = ("sweep", "replicas")


PIXEL_HELP = "a number or 'a/b' fraction in [0, 1] (pixel units, e.g. 8/255)"


def parse_eps(value: Any, key: str = "eps", positive: bool = False) -> float:
    """THE pixel-value parser: ``8/255`` or its file label ``8_255``, ``"0.1"``, ``0.1`` → float in
    [0, 1] (``positive``: in (0, 1]); anything else is a :class:`ConfigError` naming ``key``."""
    v = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
    elif isinstance(value, str):
        try:
            v = float(Fraction(value.replace(" ", "").replace("_", "/")))
        except (ValueError, ZeroDivisionError):
            v = None
    if v is None or not math.isfinite(v) or v < 0 or v > 1 or (positive and v == 0):
        what = PIXEL_HELP.replace("[0, 1]", "(0, 1]") if positive else PIXEL_HELP
        raise ConfigError(f"{key}: must be {what}, got {value!r}")
    return v


def parse_alpha(value: Any, eps: float, key: str = "alpha") -> float:
    """A step size in pixel units (``2/255``, ``0.01``) or relative to eps (``"0.25*eps"``, ``"1/4*eps"``)."""
    if isinstance(value, str) and value.replace(" ", "").endswith("*eps"):
        factor = value.replace(" ", "")[:-4]
        try:
            k = float(Fraction(factor))
        except (ValueError, ZeroDivisionError):
            k = -1.0
        if not math.isfinite(k) or k <= 0:
            raise ConfigError(f"{key}: a relative step must be 'k*eps' with a number k > 0, got {value!r}")
        return k * eps
    return parse_eps(value, key, positive=True)


def eps_label(value: Any) -> str:
    """THE label of an epsilon (file names, tables): as written in the config, ``8/255`` → ``8_255``,
    ``0.1`` → ``0.1``, ``0`` → ``0``; a number that is a whole multiple of 1/255 (an eps read back
    from a record) → ``k_255``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, float):
        k = value * 255
        if abs(k - round(k)) < 1e-6:
            return f"{int(round(k))}_255"
    return str(value).replace(" ", "").replace("/", "_")


def eps_display(label: Any) -> str:
    """An eps label as people write it: ``8_255`` → ``8/255``; other labels unchanged."""
    return str(label).replace("_", "/")


def eps_from_label(cfg: dict, label: str) -> Any:
    for e in cfg["eps"]:
        if eps_label(e) == label:
            return e
    raise ConfigError(f"eps: no epsilon with label {label!r} in {cfg['eps']!r}")


def model_seed(cfg: dict, replica: int) -> int:
    """Replica ``r`` (1-based) of every model uses ``seed + 1000*(r-1)``: replicas differ only by seed."""
    return int(cfg["seed"]) + 1000 * (int(replica) - 1)


def _member_suffix(key: str, value: Any) -> str:
    return f"{key}{value}"


def _parent_base(models: dict, parent: Any) -> str | None:
    """The config key a ``from:`` value names: a model, or the model whose sweep member it is."""
    if not isinstance(parent, str):
        return None
    if parent in models:
        return parent
    return next((b for b in sorted(models, key=len, reverse=True) if parent.startswith(b + "-")), None)


def expand_models(cfg: dict) -> dict[str, dict]:
    """Resolve sweeps and parents. Returns ``{name: spec}`` in config order.

    Each spec is a copy of the model's config with ``name``, ``base`` (the config key), ``from``
    (the resolved parent member name or None) and the sweep values applied. A model whose ``from``
    names a swept model is expanded once per parent member (the parent's suffix is appended).
    """
    models = cfg.get("models") or {}
    if not isinstance(models, dict) or not models:
        raise ConfigError("models: must be a mapping of at least one model name to its spec")
    resolved: dict[str, dict] = {}
    members_of: dict[str, list[str]] = {}

    def resolve(base: str) -> list[str]:
        if base in members_of:
            return members_of[base]
        spec = models[base]
        if not isinstance(spec, dict):
            raise ConfigError(f"models.{base}: must be a mapping with at least 'kind'")
        parent = spec.get("from")
        parent_members: list[str | None] = [None]
        if parent is not None:
            if parent in models:
                parent_members = resolve(parent)
            elif parent in resolved or any(parent in resolve(b) for b in models if parent.startswith(b + "-")):
                parent_members = [parent]
            else:
                raise ConfigError(f"models.{base}.from: {parent!r} is not a model in models "
                                  f"(known: {', '.join(models)})")
        sweep = spec.get("sweep") or {}
        if not isinstance(sweep, dict):
            raise ConfigError(f"models.{base}.sweep: must map a key ({', '.join(SWEEPABLE)}) to a list of values")
        for k, vals in sweep.items():
            if k not in SWEEPABLE:
                raise ConfigError(f"models.{base}.sweep.{k}: cannot be swept; allowed: {', '.join(SWEEPABLE)}")
            if not isinstance(vals, list) or not vals:
                raise ConfigError(f"models.{base}.sweep.{k}: must be a non-empty list of values")
        keys = list(sweep)
        combos = list(itertools.product(*(sweep[k] for k in keys))) if keys else [()]
        names = []
        for pm in parent_members:
            psuffix = ""
            if pm is not None and parent in models and pm != parent:
                psuffix = pm[len(parent):]
            for combo in combos:
                name = base + psuffix + "".join("-" + _member_suffix(k, v) for k, v in zip(keys, combo))
                member = {k: v for k, v in spec.items() if k != "sweep"}
                member.update(dict(zip(keys, combo)))
                member["name"] = name
                member["base"] = base
                member["from"] = pm
                if sweep:
                    member["sweep_values"] = dict(zip(keys, combo))
                resolved[name] = member
                names.append(name)
        members_of[base] = names
        return names

    bases = {b: _parent_base(models, s.get("from")) if isinstance(s, dict) else None for b, s in models.items()}
    for base in models:
        from_chain(bases, base)  # no cycle: the resolution below terminates
    for base in models:
        resolve(base)
    # keep config order of bases, members grouped
    ordered: dict[str, dict] = {}
    for base in models:
        for n in members_of[base]:
            ordered[n] = resolved[n]
    return ordered


def model_replicas(cfg: dict, spec: dict) -> list[int]:
    n = int(spec.get("replicas", cfg["replicas"]))
    return list(range(1, n + 1))


def _names(cfg: dict, key: str, models: dict[str, dict]) -> list[str]:
    sel = cfg["grid"][key]
    if sel == "all":
        return list(models)
    out: list[str] = []
    for s in sel:
        if s in models:
            out.append(s)
        else:  # a base name selects all its members
            members = [n for n, m in models.items() if m["base"] == s]
            if not members:
                raise ConfigError(f"grid.{key}: {s!r} is not a model (known: {', '.join(models)})")
            out.extend(members)
    return out


def setting_of(source: str, source_replica: int, target: str, target_replica: int) -> str:
    if source == target:
        return "white-box" if int(source_replica) == int(target_replica) else "black-box"
    return "transfer"


def from_chain(parent_of: dict[str, str | None], name: str) -> list[str]:
    """THE walk along ``from:``: ``[name, its parent, ..., the root]`` (``parent_of``: name -> parent
    name or None); a cycle is a :class:`ConfigError` naming the first model on it."""
    chain, cur = [name], parent_of.get(name)
    while cur is not None:
        if cur in chain:
            cyc = chain[chain.index(cur):] + [cur]
            raise ConfigError(f"models.{cyc[0]}.from: forms a cycle ({' -> '.join(cyc)})")
        chain.append(cur)
        cur = parent_of.get(cur)
    return chain


def lineage_root(parent_of: dict[str, str | None], name: str) -> str:
    """The network a model's weights descend from: follow ``from:`` (``parent_of``: name -> parent
    name or None, e.g. ``{n: s["from"] for n, s in expand_models(cfg).items()}``) to its end."""
    return from_chain(parent_of, name)[-1]


def shares_weights(parent_of: dict[str, str | None], source: str, source_replica: int, target: str,
                   target_replica: int) -> bool:
    """True when source and target descend from the same trained network: the same replica of the
    same lineage root (replica r of every model in a ``from:`` chain starts from replica r of its
    parent). Such a source is the target itself, its ancestor, descendant or sibling — never an
    independent black-box or transfer source in the studies' sense (their black-box source is a
    separately initialised model). Models of the same replica number also share their seed
    (:func:`model_seed`), so two networks trained from scratch with the same architecture start from
    the same weights: a strictly independent source has another replica number than the target."""
    return int(source_replica) == int(target_replica) and \
        lineage_root(parent_of, source) == lineage_root(parent_of, target)


def paired(pairing: str, source: str, source_replica: int, target: str, target_replica: int,
           replicas: list[int]) -> bool:
    """Whether ``grid.pairing`` evaluates source replica ``sr``'s sets on target replica ``tr``.

    ``all``: every pair.  ``cycle`` (``replicas``: the grid's target replicas, sorted): the source
    model's own replica ``sr`` (white-box) and every target's replica before ``sr`` in ``replicas``
    (cyclically: the first replica's sets go to the last one), i.e. each target replica is attacked
    black-box / by transfer from one replica of another chain, and each crafting replica white-box.
    A set is never evaluated on another model of its own replica (same lineage: no claim uses it)."""
    if pairing == "all":
        return True
    sr, tr = int(source_replica), int(target_replica)
    if sr == tr:
        return source == target
    if sr not in replicas:  # a crafting replica that is no target replica: every target replica but its own
        return True
    reps = sorted(replicas)
    return tr == reps[reps.index(sr) - 1]


def grid(cfg: dict) -> list[dict]:
    """Every evaluation cell: one adversarial set (dataset, source, replica, attack, eps) × one target
    (which target replicas: ``grid.pairing``, :func:`paired`)."""
    models = expand_models(cfg)
    sources = _names(cfg, "sources", models)
    targets = _names(cfg, "targets", models)
    target_reps = cfg["grid"]["target_replicas"]
    source_reps = cfg["grid"]["source_replicas"]  # None: every replica crafts
    pairing = cfg["grid"]["pairing"]
    cells = []
    for dataset in cfg["datasets"]:
        for src in sources:
            for sr in model_replicas(cfg, models[src]):
                if source_reps is not None and sr not in source_reps:
                    continue
                for attack in cfg["attacks"]:
                    for e in cfg["eps"]:
                        for tgt in targets:
                            for tr in target_reps:
                                if tr not in model_replicas(cfg, models[tgt]) or \
                                        not paired(pairing, src, sr, tgt, tr, target_reps):
                                    continue
                                cells.append(dict(dataset=dataset, source=src, source_replica=sr, attack=attack,
                                                  eps=eps_label(e), target=tgt, target_replica=tr,
                                                  setting=setting_of(src, sr, tgt, tr)))
    return cells


def cells_by_set(cells: list[dict]) -> dict[tuple, list[dict]]:
    """The grid's cells grouped by adversarial set ``(dataset, source, source_replica, attack, eps)``,
    in grid order: what one evaluate job evaluates (with ``grid.pairing: cycle`` the sets differ in
    their target replicas)."""
    out: dict[tuple, list[dict]] = {}
    for c in cells:
        out.setdefault((c["dataset"], c["source"], c["source_replica"], c["attack"], c["eps"]), []).append(c)
    return out


# ---- config slices (what each stage depends on) -------------------------------------------------

def data_slice(cfg: dict, dataset: str) -> dict:
    return {"dataset": dataset, "data_root": cfg["data_root"], "seed": cfg["seed"], **cfg["data"]}


def model_slice(cfg: dict, name: str, replica: int) -> dict:
    """Everything that makes one model: its own spec (not its children's), seed, device."""
    spec = dict(expand_models(cfg)[name])
    for k in _NON_TRAINING_KEYS:
        spec.pop(k, None)
    return {"model": spec, "replica": int(replica), "seed": model_seed(cfg, replica),
            "device": cfg["device"]}


def attack_slice(cfg: dict, attack: str) -> dict:
    spec = (cfg.get("attacks") or {}).get(attack)
    if spec is None:
        raise ConfigError(f"attacks.{attack}: not defined")
    return dict(spec)


def uses_grad(cfg: dict, attack: str) -> bool:
    """FGSM reuses one input gradient per source model for every eps (the ``grad`` stage, with the
    config's ``grad_mode``); an FGSM with its own ``grad:`` estimator computes its gradient in craft."""
    spec = cfg["attacks"][attack]
    return spec["type"] == "fgsm" and spec.get("grad") is None


def member_sets(cfg: dict, attack: str) -> list[str]:
    """The attacks whose stored sets (same source replica, same eps) an ensemble's ``{set: ...}``
    members reuse, in member order; none for any other attack."""
    spec = cfg["attacks"][attack]
    if spec["type"] != "ensemble":
        return []
    return list(dict.fromkeys(m["set"] for m in spec["members"] if "set" in m))


def eval_slice(cfg: dict) -> dict:
    """What ``clean`` and ``evaluate`` read (:class:`spkrobust.config.options.EvalOptions`)."""
    from spkrobust.config.options import EvalOptions, options_slice

    return options_slice(cfg, EvalOptions)


def craft_slice(cfg: dict) -> dict:
    """What ``grad`` and ``craft`` read (:class:`spkrobust.config.options.AttackOptions`): editing
    ``eval.repeats`` or ``eval.batch_size`` reruns no crafting."""
    from spkrobust.config.options import AttackOptions, options_slice

    return options_slice(cfg, AttackOptions)


# ---- config files -------------------------------------------------------------------------------

def _merge(base: dict, new: dict) -> dict:
    """Recursive merge like Snakemake's for several --configfile: later files win, mappings merge."""
    out = dict(base)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_configs(paths) -> dict:
    import yaml


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


# ---- identical models -----------------------------------------------------------------------------

# the SNN settings a model inherits from an SNN parent (spkrobust.training.common.snn_meta_from)
_INHERITED = ("neuron", "leak", "T", "encoder", "surrogate", "backend", "detach_reset")
_IDENTITY_DROP = ("name", "base", "from", "sweep", "sweep_values", "replicas")


def _training_identity(models: dict, name: str) -> dict:
    """What makes a model's weights, with every default and inherited value filled in: an IF
    neuron has leak 1, and a LIF neuron with leak 1 is the same IF node (spkrobust.nets.neurons.make_node)."""
    from spkrobust.config.schema import default, defaults

    spec = models[name]
    ident = {k: v for k, v in spec.items() if k not in _IDENTITY_DROP}
    if spec["kind"] != "ann":
        chain, m = [], spec
        while m is not None:
            if m["kind"] != "ann":
                chain.append(m)
            m = models[m["from"]] if m.get("from") else None
        for k in _INHERITED:
            ident[k] = next((s[k] for s in chain if k in s), default(k, kind=spec["kind"]) if k == "neuron"
                            else default(k))
        if ident["neuron"] == "if" or float(ident["leak"]) == 1.0:
            ident["neuron"], ident["leak"] = "if", 1.0
    if spec["kind"] in ("ann", "snn"):
        ident["train"] = {**defaults("snn_train" if spec["kind"] == "snn" else "ann_train"), **(spec.get("train") or {})}
    return ident


def aliases(cfg: dict) -> dict[tuple[str, int], tuple[str, int]]:
    """``{(model, replica): (same_as, replica)}`` for every model replica whose training (spec with
    defaults and inherited settings, seed, parent) equals that of a model earlier in the config: it
    is trained once, under the earlier name, and both names share its outputs."""
    import json

    models = expand_models(cfg)
    first: dict[str, str] = {}
    out: dict[tuple[str, int], tuple[str, int]] = {}
    canon: dict[tuple[str, int], str] = {}
    for name, spec in models.items():
        for r in model_replicas(cfg, spec):
            parent = spec.get("from")
            pkey = None if parent is None else canon.get((parent, r), parent)
            key = json.dumps([_training_identity(models, name), pkey, model_seed(cfg, r)], sort_keys=True,
                             default=str)
            if key in first:
                out[(name, r)] = (first[key], r)
                canon[(name, r)] = first[key]
            else:
                first[key] = name
                canon[(name, r)] = name
    return out

"""The config schema's enumerations equal spkrobust.config.vocab (one vocabulary); attack defaults are the schema's."""
from __future__ import annotations

from spkrobust.config import vocab
from spkrobust.config.schema import attack_defaults, load_schema

SCHEMA = load_schema()
DEFS = SCHEMA["$defs"]


def _then(defn: dict, key: str, value: str) -> dict:
    """The `then` branch of an if/then on `key` that applies to `value`."""
    for part in defn["allOf"]:
        cond = part["if"]["properties"][key]
        if cond.get("const") == value or value in cond.get("enum", ()):
            return part["then"]
    raise AssertionError(f"no branch for {key}={value}")


def test_value_enumerations_equal_the_vocabulary():
    props = SCHEMA["properties"]
    assert tuple(props["device"]["enum"]) == vocab.DEVICES
    assert tuple(props["datasets"]["items"]["enum"]) == vocab.DATASETS
    assert tuple(props["eval"]["properties"]["grad_mode"]["enum"]) == vocab.GRAD_MODES
    assert tuple(props["grid"]["properties"]["pairing"]["enum"]) == vocab.PAIRINGS
    for key, names in (("arch", vocab.ARCHS), ("neuron", vocab.NEURONS), ("encoder", vocab.ENCODERS),
                       ("surrogate", vocab.SURROGATES), ("backend", vocab.BACKENDS), ("method", vocab.METHODS),
                       ("input_norm", vocab.INPUT_NORMS), ("lr_schedule", vocab.LR_SCHEDULES)):
        assert tuple(DEFS[key]["enum"]) == names, key
    assert tuple(DEFS["snn_train"]["properties"]["loss_T"]["enum"]) == vocab.TRAIN_LOSSES_T
    assert tuple(DEFS["grad"]["oneOf"][0]["enum"]) == vocab.GRAD_ESTIMATORS
    assert tuple(DEFS["grad_spec"]["properties"]["mode"]["enum"]) == vocab.GRAD_ESTIMATORS
    assert tuple(DEFS["grad_spec"]["properties"]["surrogate"]["enum"]) == (*vocab.ATTACK_SURROGATES, None)
    assert tuple(DEFS["grad_spec"]["properties"]["shape"]["enum"]) == vocab.ASSG_SHAPES
    assert tuple(DEFS["grad_spec"]["properties"]["combine"]["enum"]) == vocab.GRAD_COMBINE
    assert tuple(DEFS["model"]["properties"]["kind"]["enum"]) == vocab.MODEL_KINDS
    assert tuple(DEFS["attack"]["properties"]["type"]["enum"]) == vocab.ATTACK_TYPES


def test_sweepable_keys_equal_the_vocabulary():
    swept = set()
    for kind in vocab.MODEL_KINDS:
        sweep = _then(DEFS["model"], "kind", kind)["properties"]["sweep"]
        keys = set(sweep.get("properties", {}))
        own = set(_then(DEFS["model"], "kind", kind)["properties"])
        assert keys == own & set(vocab.SWEEPABLE), kind  # every sweepable key the kind has
        swept |= keys
    assert swept == set(vocab.SWEEPABLE)


def test_attack_defaults_come_from_the_schema():
    for atype in vocab.ATTACK_TYPES:
        props = _then(DEFS["attack"], "type", atype)["properties"]
        defaults = attack_defaults(atype)
        assert set(props) == set(defaults), atype
        for key, default in defaults.items():
            assert props[key].get("default") == default, (atype, key)
            if key == "loss":
                assert tuple(props[key]["enum"]) == vocab.ATTACK_LOSSES[atype]
    assert attack_defaults("pgd")["steps"] == 7 and attack_defaults("rfgsm")["alpha"] is None
    d = attack_defaults("pgd")
    d["steps"] = 0  # a copy: the cached defaults stay
    assert attack_defaults("pgd")["steps"] == 7

"""What the training stages (``train-ann``, ``convert``, ``train-snn``) share: seeding, and the SNN
metadata a stage builds from its parent model and its spec."""
from __future__ import annotations

import torch

from spkrobust.config.schema import default
from spkrobust.config.vocab import SNN_KEYS
from spkrobust.nets.models import default_meta


def seed_everything(seed: int) -> None:
    torch.manual_seed(int(seed))
    torch.use_deterministic_algorithms(False)


def snn_meta_from(spec: dict, base_meta: dict) -> dict:
    """SNN metadata for ``spec``: start from ``base_meta`` (ANN or SNN) and apply the spec's neuron settings."""
    meta = {k: base_meta[k] for k in ("arch", "in_channels", "image_size", "num_classes", "mean", "std", "dropout")}
    meta["conv_dropout"] = base_meta.get("conv_dropout", 0.0)  # checkpoints from before conv dropout: none
    keep = base_meta if base_meta.get("kind") == "snn" else {}
    snn = {k: spec.get(k, keep.get(k, default(k))) for k in SNN_KEYS}
    snn["thresholds"] = keep.get("thresholds")
    return default_meta("snn", **meta, **snn)

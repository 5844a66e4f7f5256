"""The files of the attack stages: the shared FGSM gradient sign (``grad``) and the adversarial set
(``craft``), each tagged with its format from :mod:`spkrobust.config.vocab`; written and read only
here (``craft`` reads the gradient, ``evaluate`` the adversarial set)."""
from __future__ import annotations

import torch

from spkrobust.config.vocab import ADV_FORMAT, GRAD_FORMAT
from spkrobust.errors import FileProblem
from spkrobust.io import atomic_save, safe_load


def write_grad(path: str, sign: torch.Tensor, indices: torch.Tensor, labels: torch.Tensor, meta: dict) -> None:
    atomic_save({"format": GRAD_FORMAT, "sign": sign, "indices": indices, "labels": labels, "meta": meta}, path)


def write_adv(path: str, x_adv: torch.Tensor, indices: torch.Tensor, labels: torch.Tensor, meta: dict) -> None:
    atomic_save({"format": ADV_FORMAT, "x_adv": x_adv.contiguous(), "indices": indices, "labels": labels,
                 "meta": meta}, path)


def load_grad(path: str, n: int | None = None) -> dict:
    d = safe_load(path, expect_format=GRAD_FORMAT, what="gradient file")
    sign = d.get("sign")
    if not isinstance(sign, torch.Tensor) or sign.dtype != torch.int8:
        raise FileProblem(f"{path}: gradient file lacks an int8 'sign' tensor; rerun 'spkrobust grad'")
    if n is not None and len(sign) != n:
        raise FileProblem(f"{path}: gradient file has {len(sign)} inputs but the data has {n}; rerun 'spkrobust grad'")
    return d


def load_adv(path: str) -> dict:
    d = safe_load(path, expect_format=ADV_FORMAT, what="adversarial set")
    for key in ("x_adv", "indices", "labels", "meta"):
        if key not in d:
            raise FileProblem(f"{path}: adversarial set lacks {key!r}; rerun 'spkrobust craft'")
    return d

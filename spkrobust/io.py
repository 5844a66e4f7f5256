"""File I/O: atomic writes and safe (weights-only) loading with clear errors."""
from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
import tempfile
from pathlib import Path
from typing import Any

from spkrobust.errors import FileProblem


def _atomic_write(path: str | os.PathLike, write) -> None:
    """``write(f)`` into a temporary file beside ``path``, fsync, then rename over ``path``: a
    process killed mid-write leaves only a hidden ``.tmp`` file, never a truncated ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically (:func:`_atomic_write`)."""
    import torch

    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write ``data`` to ``path`` atomically (:func:`_atomic_write`)."""
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    atomic_write_bytes(text.encode(), path)


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n", path)


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file; missing, invalid or binary is one line naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileProblem(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FileProblem(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); "
                          "delete it and rerun the stage that writes it") from None
    except UnicodeDecodeError:
        raise FileProblem(f"{path}: not a text JSON file") from None


def read_tagged(path: str | os.PathLike, fmt: str, what: str, writer: str) -> dict:
    """A JSON file written by spkrobust, recognised by its ``format`` tag (no guessing)."""
    obj = read_json(path)
    found = obj.get("format") if isinstance(obj, dict) else None
    if found != fmt:
        raise FileProblem(f"{path}: not a spkrobust {what} (format {found!r}, expected {fmt!r}); "
                          f"rerun `spkrobust {writer}`")
    return dict(obj)


def safe_load(path: str | os.PathLike, expect_format: str | None = None, what: str = "file") -> Any:
    """Load a spkrobust ``.pt`` file without unpickling arbitrary objects.

    Uses ``torch.load(weights_only=True)``: only tensors and plain containers are accepted, so a
    file carrying a code payload is refused. ``expect_format`` checks the ``format`` field.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.exists():
        raise FileProblem(f"{path}: {what} not found")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
        refused = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", text, re.IGNORECASE)
        if refused:
            raise FileProblem(
                f"{path}: refused to load {what}: unpickling it would import or call {refused.group(1)} "
                f"(a code payload, or a file not written by spkrobust); only load files written by spkrobust"
            ) from None
        if zipfile.is_zipfile(path):
            raise FileProblem(
                f"{path}: refused to load {what}: it contains objects other than tensors and plain data; "
                f"only load files written by spkrobust"
            ) from None
        raise FileProblem(
            f"{path}: {what} is corrupt or not a PyTorch file; delete it and rerun the stage that writes it"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileProblem(
            f"{path}: {what} is corrupt or truncated ({first[:160]}); delete it and rerun the stage that writes it"
        ) from None
    if expect_format is not None:
        fmt = obj.get("format") if isinstance(obj, dict) else None
        if fmt != expect_format:
            raise FileProblem(f"{path}: not a spkrobust {what} (format {fmt!r}, expected {expect_format!r})")
    return obj

"""Datasets: find the raw files, prepare one canonical tensor file, load it back.

Supported: ``fashion_mnist`` (Debian's ``/usr/share/datasets/fashion-mnist``, torchvision's layout
under the data root, or download), ``cifar10`` and ``cifar100`` (torchvision's layout under the data
root, downloaded when the network allows). The prepared file holds uint8 images ``[N, C, H, W]``,
labels, class names, the shape, the seeded subset indices and a SHA-256 of the raw files it was made
from. Images reach models as pixels in [0, 1]; normalisation lives inside the models.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spkrobust.errors import FileProblem, UserError
from spkrobust.io import atomic_save, safe_load
from spkrobust.config.vocab import DATA_FORMAT, DATASETS

FORMAT = DATA_FORMAT
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@dataclass
class Prepared:
    dataset: str
    train_x: torch.Tensor  # uint8 [N, C, H, W]
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    calib_idx: torch.Tensor  # indices into train
    classes: list[str]
    shape: tuple[int, int, int]
    mean: list[float]
    std: list[float]
    source_sha256: str
    seed: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def calib_x(self) -> torch.Tensor:
        return self.train_x[self.calib_idx]

    def test_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The test set as every evaluation and attack sees it: pixels in [0, 1] (float), labels int64."""
        return self.test_x.float() / 255.0, self.test_y.long()


def _sha256_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise FileProblem(f"{path}: cannot read IDX file ({e}); replace it with an intact copy") from None
    if len(data) < 8:
        raise FileProblem(f"{path}: truncated IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    n = int(np.prod(dims))
    if len(data) - offset != n:
        raise FileProblem(f"{path}: truncated IDX file ({len(data) - offset} of {n} bytes); replace it")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims).copy()


def _find_fashion(data_root: Path) -> list[Path]:
    candidates = [DEBIAN_FASHION_MNIST, data_root / "FashionMNIST" / "raw", data_root / "fashion-mnist"]
    for d in candidates:
        found = []
        for stem in FASHION_FILES:
            p = next((q for q in (d / f"{stem}.gz", d / stem) if q.exists()), None)
            if p is None:
                break
            found.append(p)
        else:
            return found
    try:  # torchvision download (works where there is network)
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(data_root), train=True, download=True)
        FashionMNIST(str(data_root), train=False, download=True)
        return _find_fashion_no_download(data_root / "FashionMNIST" / "raw")
    except Exception:
        pass
    raise FileProblem(
        "fashion_mnist: raw files not found in " + ", ".join(str(c) for c in candidates)
        + f" and download failed; install Debian's dataset-fashion-mnist or put {', '.join(f + '.gz' for f in FASHION_FILES)} "
        f"in {data_root / 'FashionMNIST' / 'raw'}")


def _find_fashion_no_download(d: Path) -> list[Path]:
    return [next(q for q in (d / f"{s}.gz", d / s) if q.exists()) for s in FASHION_FILES]


def _load_fashion(data_root: Path):
    files = _find_fashion(data_root)
    trx, trl, tex, tel = (_read_idx(p) for p in files)
    return (trx[:, None], trl, tex[:, None], tel, list(FASHION_CLASSES), _sha256_files(files))


CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", "label_names", "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_label_names", "fine_labels"),
}


def _load_cifar(name: str, data_root: Path):
    import pickle

    folder, train_files, test_files, meta_file, names_key, labels_key = CIFAR[name]
    base = data_root / folder
    needed = [base / f for f in train_files + test_files + [meta_file]]
    missing = [p for p in needed if not p.exists()]
    if missing:
        try:
            from torchvision.datasets import CIFAR10, CIFAR100

            (CIFAR10 if name == "cifar10" else CIFAR100)(str(data_root), train=True, download=True)
            missing = [p for p in needed if not p.exists()]
        except Exception:
            pass
    if missing:
        raise FileProblem(
            f"{name}: missing {', '.join(p.name for p in missing)} in {base} (download failed: no network?); "
            f"put torchvision's extracted {folder}/ under the data root {data_root}")

    def read(p: Path):
        # CIFAR's own python format is a pickle of plain arrays and lists; it is read with a
        # restricted unpickler that only allows numpy array reconstruction.
        class _Restricted(pickle.Unpickler):
            def find_class(self, module, cls):
                if module.startswith("numpy") and cls in ("_reconstruct", "ndarray", "dtype", "scalar"):
                    return super().find_class(module, cls)
                if module == "numpy.core.multiarray" or module == "numpy._core.multiarray":
                    return super().find_class(module, cls)
                raise pickle.UnpicklingError(f"{p}: refusing to load {module}.{cls}")

        try:
            with open(p, "rb") as f:
                return _Restricted(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise FileProblem(f"{p}: corrupt or unexpected CIFAR file ({e})") from None

    def stack(files):
        xs, ys = [], []
        for fn in files:
            d = read(base / fn)
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[labels_key], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    trx, trl = stack(train_files)
    tex, tel = stack(test_files)
    classes = list(read(base / meta_file)[names_key])
    return trx, trl, tex, tel, classes, _sha256_files(needed)


def _subset(n_total: int, size, gen: torch.Generator) -> torch.Tensor:
    if size is None or size >= n_total:
        return torch.arange(n_total)
    return torch.randperm(n_total, generator=gen)[: int(size)].sort().values


def prepare(dataset: str, data_root: str | Path = "data", train_size=None, test_size=None, calib_size=256,
            seed: int = 0) -> dict:
    """Read the raw dataset, take seeded subsets, return the canonical dict (see module doc)."""
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    root = Path(data_root)
    if dataset == "fashion_mnist":
        trx, trl, tex, tel, classes, sha = _load_fashion(root)
    else:
        trx, trl, tex, tel, classes, sha = _load_cifar(dataset, root)
    gen = torch.Generator().manual_seed(int(seed))
    tr_idx = _subset(len(trx), train_size, gen)
    te_idx = _subset(len(tex), test_size, gen)
    train_x = torch.from_numpy(np.ascontiguousarray(trx))[tr_idx]
    train_y = torch.from_numpy(np.asarray(trl, dtype=np.int64))[tr_idx]
    calib_idx = _subset(len(train_x), calib_size, gen)
    xf = train_x.float() / 255.0
    mean = xf.mean(dim=(0, 2, 3)).tolist()
    std = xf.std(dim=(0, 2, 3)).tolist()
    return {
        "format": FORMAT, "dataset": dataset,
        "train_x": train_x.contiguous(), "train_y": train_y,
        "test_x": torch.from_numpy(np.ascontiguousarray(tex))[te_idx].contiguous(),
        "test_y": torch.from_numpy(np.asarray(tel, dtype=np.int64))[te_idx],
        "test_idx": te_idx, "calib_idx": calib_idx,
        "classes": [str(c) for c in classes], "shape": list(train_x.shape[1:]),
        "mean": mean, "std": std, "source_sha256": sha, "seed": int(seed),
        "sizes": {"train": len(train_x), "test": len(te_idx), "calib": len(calib_idx)},
    }


def load_prepared(path: str | Path) -> Prepared:
    d = safe_load(path, expect_format=FORMAT, what="prepared dataset")
    try:
        p = Prepared(dataset=d["dataset"], train_x=d["train_x"], train_y=d["train_y"], test_x=d["test_x"],
                     test_y=d["test_y"], calib_idx=d["calib_idx"], classes=list(d["classes"]),
                     shape=tuple(d["shape"]), mean=list(d["mean"]), std=list(d["std"]),
                     source_sha256=d["source_sha256"], seed=int(d["seed"]))
    except KeyError as e:
        raise FileProblem(f"{path}: prepared dataset lacks field {e}; rerun 'spkrobust prepare'") from None
    if len(p.train_x) != len(p.train_y) or len(p.test_x) != len(p.test_y):
        raise FileProblem(f"{path}: prepared dataset is inconsistent (images/labels differ in length); rerun prepare")
    return p


def to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images → float pixels in [0, 1]."""
    return x_uint8.float().div_(255.0)


# training augmentation as Rathi et al. (RandomCrop(32, padding=4) + RandomHorizontalFlip on CIFAR);
# Fashion-MNIST is cropped only (a flipped garment is still a plausible garment, but flips are not
# what a Fashion-MNIST reference used)
CROP_PADDING = 4
FLIP_DATASETS = ("cifar10", "cifar100")


def augment(x: torch.Tensor, dataset: str) -> torch.Tensor:
    """Random crop (zero padding ``CROP_PADDING``) of each float image, plus a random horizontal flip
    on CIFAR; draws from torch's global RNG (seeded per epoch by training)."""
    from torchvision.transforms import v2

    steps = [v2.RandomCrop(x.shape[-1], padding=CROP_PADDING)]
    if dataset in FLIP_DATASETS:
        steps.append(v2.RandomHorizontalFlip())
    tf = v2.Compose(steps)
    return torch.stack([tf(img) for img in x])


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = False,
            generator: torch.Generator | None = None):
    """Yield ``(x_float, y)`` mini-batches from uint8 tensors (no DataLoader worker processes)."""
    n = len(x)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i: i + batch_size]
        yield to_float(x[idx]), y[idx]


# ---- CLI ----------------------------------------------------------------------------------------

def _configure(p: argparse.ArgumentParser):
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--cfg", required=True, help="JSON: data_root, train_size, test_size, calib_size, seed")
    p.add_argument("--out", required=True)


def _run(args):
    """Prepare a dataset into one canonical file."""
    from spkrobust.config.options import read_cfg, require

    cfg = read_cfg(args.cfg)
    t0 = time.time()
    d = prepare(args.dataset, *require(cfg, "data_root", "train_size", "test_size", "calib_size", "seed"))
    atomic_save(d, args.out)
    print(f"prepared {args.dataset}: {d['sizes']} shape={d['shape']} sha256={d['source_sha256'][:12]} "
          f"in {time.time() - t0:.1f}s -> {args.out}")


CLI = {"prepare": (_configure, _run)}

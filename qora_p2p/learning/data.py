"""Datasets with no download, and their deterministic partition across members.

Theory of operation
-------------------
A `Dataset` is a train split (to be partitioned across members) and a shared held-out test split.
Two ship with scikit-learn and need no network: ``digits`` (1797 8x8 images, 10 classes; features
scaled to [0, 1]) and ``breast_cancer`` (569 x 30, 2 classes; standardised with train statistics).
A user's own data loads from an ``.npz`` file with arrays ``X`` and ``y`` and optionally ``X_test``
and ``y_test`` (else a stratified split is made).

`partition` splits the training indices across ``members``:

* ``iid``: a seeded permutation cut into near-equal parts;
* ``dirichlet``: for each class, member shares drawn from Dirichlet(alpha) (Hsu, Qi, Brown 2019);
  small alpha means strong label skew. Draws repeat (same seed stream) until every member holds at
  least ``min_samples`` samples;
* ``shards``: label-sorted data cut into ``members * shards_per_member`` shards, each member taking
  ``shards_per_member`` of them at random (McMahan et al. 2017's pathological non-IID split).

The whole partition, hence member k's shard, is a pure function of (labels, members, scheme, seed,
parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from qora_p2p.errors import LearningError

__all__ = ["DATASETS", "PARTITIONS", "Dataset", "load_dataset", "partition"]

DATASETS = ("digits", "breast_cancer", "classes20")
# classes20: a generated task of higher dimension than the bundled ones (sklearn's
# make_classification, fixed generator seed so every run sees the same data): 20 classes, 200
# features of which 60 informative, 6,000 samples (a centralised logistic regression reaches 0.81);
# a logistic model has 4,020 parameters.
CLASSES20 = {"n_samples": 6_000, "n_features": 200, "n_informative": 60, "n_redundant": 20, "n_classes": 20, "n_clusters_per_class": 1, "class_sep": 2.0, "random_state": 20}
PARTITIONS = ("iid", "dirichlet", "shards")
TEST_FRACTION = 0.25  # held-out share when a dataset has no test split of its own
DIRICHLET_ATTEMPTS_MAX = 1000  # redraws before a too-skewed split is reported as impossible
NPZ_SAMPLES_MAX = 10_000_000  # a user's file larger than this is refused before it is used
NPZ_FEATURES_MAX = 1_000_000

Features = npt.NDArray[np.float64]
Labels = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Dataset:
    """Train and test splits with integer labels 0..classes-1.

    Attributes:
        image_shape: (height, width) when the features are a flattened image (digits), else None.
    """

    name: str
    train_features: Features
    train_labels: Labels
    test_features: Features
    test_labels: Labels
    classes: int
    image_shape: tuple[int, int] | None = None

    @property
    def features(self) -> int:
        return int(self.train_features.shape[1])


def _stratified_split(labels: Labels, test_fraction: float, seed: int) -> tuple[Labels, Labels]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = round(len(members) * test_fraction)
        test.append(members[:cut])
        train.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _split(
    name: str, features: Features, labels: Labels, seed: int, image_shape: tuple[int, int] | None = None
) -> Dataset:
    train, test = _stratified_split(labels, TEST_FRACTION, seed)
    classes = int(labels.max()) + 1
    return Dataset(name, features[train], labels[train], features[test], labels[test], classes, image_shape)


def _standardised(dataset: Dataset) -> Dataset:
    mean = dataset.train_features.mean(axis=0)
    scale = dataset.train_features.std(axis=0)
    scale[scale == 0] = 1.0
    return Dataset(
        dataset.name,
        (dataset.train_features - mean) / scale,
        dataset.train_labels,
        (dataset.test_features - mean) / scale,
        dataset.test_labels,
        dataset.classes,
        dataset.image_shape,
    )


def _check_arrays(path: Path, features: np.ndarray, labels: np.ndarray, which: str) -> tuple[Features, Labels]:
    if features.ndim != 2 or labels.ndim != 1 or features.shape[0] != labels.shape[0]:
        raise LearningError(
            f"{path}: {which} needs X of shape (m, d) and y of shape (m,), got {features.shape} and {labels.shape}"
        )
    if not 1 <= features.shape[0] <= NPZ_SAMPLES_MAX or not 1 <= features.shape[1] <= NPZ_FEATURES_MAX:
        raise LearningError(f"{path}: {which} has shape {features.shape}, outside the supported size")
    if features.dtype.kind not in "fiu" or not np.isfinite(features.astype(np.float64)).all():
        raise LearningError(f"{path}: {which} features must be finite real numbers")
    if labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
        raise LearningError(f"{path}: {which} labels must be non-negative integers 0..classes-1")
    return features.astype(np.float64), labels.astype(np.int64)


def _load_npz(path: Path, seed: int) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise LearningError(f"cannot read {path} as a numpy .npz file: {error}") from error
    missing = {"X", "y"} - set(arrays)
    if missing:
        raise LearningError(f"{path}: missing array(s) {sorted(missing)}; expected X, y and optionally X_test, y_test")
    features, labels = _check_arrays(path, arrays["X"], arrays["y"], "training data")
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise LearningError(f"{path}: give both X_test and y_test, or neither")
    if "X_test" not in arrays:
        return _split(path.stem, features, labels, seed)
    test_features, test_labels = _check_arrays(path, arrays["X_test"], arrays["y_test"], "test data")
    if test_features.shape[1] != features.shape[1]:
        raise LearningError(f"{path}: X_test has {test_features.shape[1]} features, X has {features.shape[1]}")
    classes = int(max(labels.max(), test_labels.max())) + 1
    if classes < 2:
        raise LearningError(f"{path}: labels must cover at least 2 classes")
    return Dataset(path.stem, features, labels, test_features, test_labels, classes)


def load_dataset(source: str, *, seed: int = 0) -> Dataset:
    """Load a bundled dataset by name (``digits``, ``breast_cancer``, the generated ``classes20``)
    or a user's ``.npz`` by path.

    Raises:
        LearningError: unknown name, unreadable or malformed file.
    """
    if source == "digits":
        from sklearn.datasets import load_digits  # noqa: PLC0415 (import cost only when used)

        bunch = load_digits()
        return _split("digits", bunch.data / 16.0, bunch.target.astype(np.int64), seed, (8, 8))
    if source == "breast_cancer":
        from sklearn.datasets import load_breast_cancer  # noqa: PLC0415

        bunch = load_breast_cancer()
        return _standardised(_split("breast_cancer", bunch.data, bunch.target.astype(np.int64), seed))
    if source == "classes20":
        from sklearn.datasets import make_classification  # noqa: PLC0415

        features, labels = make_classification(**CLASSES20)
        return _standardised(_split("classes20", features, labels.astype(np.int64), seed))
    path = Path(source)
    if path.suffix == ".npz":
        if not path.is_file():
            raise LearningError(f"dataset file {path} does not exist")
        return _load_npz(path, seed)
    raise LearningError(f"unknown dataset {source!r}: use one of {', '.join(DATASETS)} or a path to an .npz file")


def _dirichlet(labels: Labels, members: int, alpha: float, rng: np.random.Generator, min_samples: int) -> list[Labels]:
    classes = np.unique(labels)
    for _ in range(DIRICHLET_ATTEMPTS_MAX):
        parts: list[list[Labels]] = [[] for _ in range(members)]
        for label in classes:
            indices = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(members, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(indices)).astype(np.int64)
            for member, piece in enumerate(np.split(indices, cuts)):
                parts[member].append(piece)
        shards = [np.sort(np.concatenate(pieces)) for pieces in parts]
        if min(len(shard) for shard in shards) >= min_samples:
            return shards
    raise LearningError(
        f"no Dirichlet(alpha={alpha}) split of {len(labels)} samples gives all {members} members "
        f"{min_samples} samples in {DIRICHLET_ATTEMPTS_MAX} draws; raise alpha or lower min_samples"
    )


def partition(
    labels: Labels,
    members: int,
    scheme: str = "iid",
    *,
    seed: int = 0,
    alpha: float = 0.5,
    shards_per_member: int = 2,
    min_samples: int = 10,
) -> list[Labels]:
    """Split sample indices across ``members``; see the module notes for the schemes.

    Returns:
        One sorted index array per member; together they cover every sample exactly once.

    Raises:
        LearningError: unknown scheme, too few samples, or parameters out of range.
    """
    if members < 1:
        raise LearningError(f"members must be at least 1, got {members}")
    if len(labels) < members * max(min_samples, 1):
        raise LearningError(f"{len(labels)} samples cannot give {members} members {min_samples} each")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(len(labels)), members)]
    if scheme == "dirichlet":
        if not alpha > 0:
            raise LearningError(f"dirichlet alpha must be positive, got {alpha}")
        return _dirichlet(labels, members, alpha, rng, min_samples)
    if scheme == "shards":
        if shards_per_member < 1:
            raise LearningError(f"shards_per_member must be at least 1, got {shards_per_member}")
        order = np.argsort(labels, kind="stable")
        shards = np.array_split(order, members * shards_per_member)
        assignment = rng.permutation(len(shards)).reshape(members, shards_per_member)
        return [np.sort(np.concatenate([shards[i] for i in row])) for row in assignment]
    raise LearningError(f"unknown partition {scheme!r}; known: {', '.join(PARTITIONS)}")

"""Datasets load without a download; partitions are deterministic and cover every sample once."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qora_p2p.errors import LearningError
from qora_p2p.learning.data import load_dataset, partition


def test_digits_and_breast_cancer_load_with_held_out_test_sets():
    """The bundled datasets split into disjoint train/test parts with integer labels."""
    digits = load_dataset("digits")
    assert digits.features == 64 and digits.classes == 10 and digits.image_shape == (8, 8)
    assert len(digits.train_labels) + len(digits.test_labels) == 1797
    assert 0.0 <= digits.train_features.min() and digits.train_features.max() <= 1.0
    cancer = load_dataset("breast_cancer")
    assert cancer.classes == 2 and cancer.features == 30
    assert abs(cancer.train_features.mean()) < 1e-9  # standardised with train statistics


def test_npz_loader_reads_a_users_data(tmp_path):
    """An .npz with X, y (and optionally X_test, y_test) loads as a dataset."""
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, X=rng.normal(size=(40, 3)), y=rng.integers(0, 2, 40), X_test=rng.normal(size=(10, 3)), y_test=rng.integers(0, 2, 10))
    data = load_dataset(str(path))
    assert data.name == "mine" and data.features == 3 and len(data.test_labels) == 10
    split = tmp_path / "split.npz"
    np.savez(split, X=rng.normal(size=(40, 3)), y=np.repeat([0, 1], 20))
    assert len(load_dataset(str(split)).test_labels) == 10


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"X": np.zeros((4, 2))}, "missing array"),
        ({"X": np.zeros((4, 2)), "y": np.zeros(3, dtype=int)}, "shape"),
        ({"X": np.full((4, 2), np.nan), "y": np.zeros(4, dtype=int)}, "finite"),
        ({"X": np.zeros((4, 2)), "y": np.array([0, 1, -1, 0])}, "non-negative"),
        ({"X": np.zeros((4, 2)), "y": np.zeros(4, dtype=int), "X_test": np.zeros((2, 2))}, "both X_test and y_test"),
    ],
)
def test_npz_loader_names_the_problem(tmp_path, arrays, message):
    """Malformed user data raises LearningError saying what is wrong."""
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(LearningError, match=message):
        load_dataset(str(path))


def test_unknown_dataset_and_missing_file_are_errors(tmp_path):
    """Neither a bundled name nor an existing .npz path: a clear error."""
    with pytest.raises(LearningError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(LearningError, match="does not exist"):
        load_dataset(str(tmp_path / "absent.npz"))


@settings(max_examples=30)
@given(
    st.sampled_from(["iid", "dirichlet", "shards"]),
    st.integers(1, 12),
    st.integers(0, 2**31),
    st.sampled_from([0.3, 0.5, 1.0, 10.0]),
)
def test_partitions_cover_every_sample_exactly_once(scheme, members, seed, alpha):
    """Every scheme assigns each sample to exactly one member, as a pure function of the seed."""
    labels = np.repeat(np.arange(10), 60)
    parts = partition(labels, members, scheme, seed=seed, alpha=alpha, min_samples=5)
    assert len(parts) == members
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(labels.size))
    again = partition(labels, members, scheme, seed=seed, alpha=alpha, min_samples=5)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_dirichlet_skews_labels_and_iid_does_not():
    """Small alpha concentrates classes on few members; IID shards mirror the global mix."""
    labels = np.repeat(np.arange(10), 100)
    skewed = partition(labels, 10, "dirichlet", seed=1, alpha=0.1)
    even = partition(labels, 10, "iid", seed=1)
    def top_share(part):
        return np.bincount(labels[part], minlength=10).max() / len(part)
    assert np.mean([top_share(p) for p in skewed]) > 0.5
    assert np.mean([top_share(p) for p in even]) < 0.25
    shards = partition(labels, 10, "shards", seed=1, shards_per_member=2)
    assert max(len(np.unique(labels[p])) for p in shards) <= 4


def test_partition_errors_name_the_problem():
    """Impossible requests fail with a clear message."""
    labels = np.zeros(50, dtype=int)
    with pytest.raises(LearningError, match="unknown partition"):
        partition(labels, 2, "random")
    with pytest.raises(LearningError, match="cannot give"):
        partition(labels, 10, "iid", min_samples=10)
    with pytest.raises(LearningError, match="alpha"):
        partition(labels, 2, "dirichlet", alpha=0.0)


def test_the_generated_higher_dimensional_task_is_the_same_every_time():
    """classes20 is generated from a fixed seed: the same samples for every run; the run's seed
    only chooses the train/test split."""
    first, again, other = load_dataset("classes20", seed=0), load_dataset("classes20", seed=0), load_dataset("classes20", seed=1)
    assert first.classes == 20 and first.features == 200
    assert first.train_features.shape[0] + first.test_features.shape[0] == 6_000
    assert np.array_equal(first.train_features, again.train_features) and np.array_equal(first.test_labels, again.test_labels)
    assert not np.array_equal(first.test_labels, other.test_labels)
    assert sorted(np.unique(first.train_labels)) == list(range(20))

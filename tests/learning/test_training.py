"""Local training converges; worker momentum follows its definition; bad settings are refused."""

import numpy as np
import pytest

from qora_p2p.errors import LearningError
from qora_p2p.learning import LocalTrainer, TrainingConfig, build_model, evaluate, load_dataset, train_local


def test_one_node_learns_digits():
    """Twenty epochs of local SGD reach over 90% test accuracy on digits."""
    data = load_dataset("digits")
    model = build_model("logistic", data.features, data.classes)
    params = train_local(
        model, model.initial(0), data.train_features, data.train_labels, TrainingConfig(epochs=20), np.random.default_rng(0)
    )
    assert evaluate(model, params, data.test_features, data.test_labels).accuracy > 0.9
    assert evaluate(model, model.initial(0), data.test_features, data.test_labels).accuracy < 0.3


def test_worker_momentum_is_an_average_of_deltas():
    """With update_momentum beta, the second update is beta*m1 + (1-beta)*delta2."""
    data = load_dataset("digits")
    model = build_model("logistic", data.features, data.classes)
    config = TrainingConfig(update_momentum=0.5)
    plain = LocalTrainer(model, data.train_features[:50], data.train_labels[:50], TrainingConfig(), seed=1)
    smoothed = LocalTrainer(model, data.train_features[:50], data.train_labels[:50], config, seed=1)
    start = model.initial(0)
    first, first_plain = smoothed.update(start), plain.update(start)
    assert np.allclose(first, first_plain)
    second, second_plain = smoothed.update(start + first), plain.update(start + first)
    assert np.allclose(second, 0.5 * first + 0.5 * second_plain)


@pytest.mark.parametrize(
    "settings",
    [{"epochs": -1}, {"steps": 0}, {"batch_size": 0}, {"learning_rate": 0.0}, {"momentum": 1.0}, {"update_momentum": -0.1}],
)
def test_bad_training_settings_are_rejected(settings):
    """Out-of-range settings raise LearningError at construction."""
    with pytest.raises(LearningError):
        TrainingConfig(**settings)


class _CountingModel:
    """A model stand-in that records the size of every minibatch it is asked about."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def loss_and_gradient(self, params, features, labels):
        self.batches.append(labels.size)
        return 0.0, np.ones_like(params)


@pytest.mark.parametrize(("samples", "steps", "expected"), [(1000, 10, [32] * 10), (50, 4, [32, 18, 32, 18]), (5, 3, [5, 5, 5])])
def test_fixed_steps_do_the_same_work_whatever_the_shard_size(samples, steps, expected):
    """With ``steps`` set, a member runs exactly that many minibatches: a large shard stops part-way
    through a pass, a small one starts new passes, and one smaller than a batch gives whole-shard batches."""
    model = _CountingModel()
    features, labels = np.zeros((samples, 2)), np.zeros(samples, dtype=np.int64)
    train_local(model, np.zeros(3), features, labels, TrainingConfig(steps=steps), np.random.default_rng(0))  # type: ignore[arg-type]
    assert model.batches == expected


def test_epochs_when_set_pass_over_the_whole_shard():
    """With ``epochs`` set, two epochs over 70 samples in batches of 32 are 2 x (32, 32, 6)."""
    model = _CountingModel()
    train_local(model, np.zeros(3), np.zeros((70, 2)), np.zeros(70, dtype=np.int64), TrainingConfig(epochs=2), np.random.default_rng(0))  # type: ignore[arg-type]
    assert model.batches == [32, 32, 6, 32, 32, 6]


def test_fixed_steps_make_update_size_independent_of_shard_size():
    """The point of ``steps``: on the same data, a shard 20 times larger gives an update of about the
    same norm with fixed steps, and a far larger one with fixed epochs."""
    data = load_dataset("digits")
    model = build_model("logistic", data.features, data.classes)
    start = model.initial(0)

    def norm(count: int, config: TrainingConfig) -> float:
        params = train_local(model, start, data.train_features[:count], data.train_labels[:count], config, np.random.default_rng(0))
        return float(np.linalg.norm(params - start))

    by_epochs = norm(1000, TrainingConfig(epochs=1)) / norm(50, TrainingConfig(epochs=1))
    by_steps = norm(1000, TrainingConfig(steps=4)) / norm(50, TrainingConfig(steps=4))
    assert TrainingConfig().epochs == 0, "fixed steps are the default"
    assert by_epochs > 3
    assert 0.5 < by_steps < 2

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
    [{"epochs": 0}, {"batch_size": 0}, {"learning_rate": 0.0}, {"momentum": 1.0}, {"update_momentum": -0.1}],
)
def test_bad_training_settings_are_rejected(settings):
    """Out-of-range settings raise LearningError at construction."""
    with pytest.raises(LearningError):
        TrainingConfig(**settings)

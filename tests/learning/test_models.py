"""Models: flat parameter layout, seeded initialisation, exact gradients."""

import numpy as np
import pytest

from qora_p2p.errors import LearningError
from qora_p2p.learning.models import MLP, LogisticRegression, ParameterLayout, build_model


def numerical_gradient(model, params, features, labels, step=1e-6):
    gradient = np.zeros_like(params)
    for index in range(params.size):
        shifted = params.copy()
        shifted[index] += step
        upper = model.loss_and_gradient(shifted, features, labels)[0]
        shifted[index] -= 2 * step
        lower = model.loss_and_gradient(shifted, features, labels)[0]
        gradient[index] = (upper - lower) / (2 * step)
    return gradient


@pytest.mark.parametrize("model", [LogisticRegression(5, 3), MLP(5, (4, 3), 3)], ids=["logistic", "mlp"])
def test_gradient_matches_finite_differences(model):
    """Backpropagation agrees with central finite differences of the loss."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(7, 5))
    labels = rng.integers(0, 3, size=7)
    params = model.initial(3) + rng.normal(0, 0.1, size=model.layout.dimension)
    _, gradient = model.loss_and_gradient(params, features, labels)
    assert np.allclose(gradient, numerical_gradient(model, params, features, labels), atol=1e-6)


def test_layout_split_gives_views_and_join_inverts_it():
    """split() returns writable views in layout order; join() reassembles the same vector."""
    layout = ParameterLayout((("a", (2, 3)), ("b", (4,))))
    vector = np.arange(10, dtype=np.float64)
    pieces = layout.split(vector)
    assert pieces["a"].tolist() == [[0, 1, 2], [3, 4, 5]] and pieces["b"].tolist() == [6, 7, 8, 9]
    pieces["b"][0] = -1.0
    assert vector[6] == -1.0
    assert layout.join(pieces).tolist() == vector.tolist()
    with pytest.raises(LearningError, match="shape"):
        layout.split(np.zeros(9))


def test_initial_parameters_are_a_function_of_the_seed():
    """Same seed, same bytes; another seed, other values."""
    model = MLP(64, (32,), 10)
    assert model.initial(7).tobytes() == model.initial(7).tobytes()
    assert not np.array_equal(model.initial(7), model.initial(8))


def test_invalid_models_are_rejected():
    """Unknown kinds and impossible shapes raise LearningError."""
    with pytest.raises(LearningError, match="unknown model"):
        build_model("transformer", 4, 2)
    with pytest.raises(LearningError):
        LogisticRegression(4, 1)
    with pytest.raises(LearningError):
        MLP(4, (0,), 2)

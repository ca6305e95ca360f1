"""The PyTorch adapter moves parameters exactly and trains inside the federation."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from qora_p2p.errors import LearningError  # noqa: E402
from qora_p2p.learning import FederationConfig, run_federation  # noqa: E402
from qora_p2p.learning.torch_adapter import TorchModel, parameters_to_vector, vector_to_parameters  # noqa: E402


def small_cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10)
    )


def test_vector_round_trip_is_exact():
    """parameters_to_vector and vector_to_parameters invert each other, in named_parameters order."""
    module = torch.nn.Linear(3, 2)
    vector = np.arange(8, dtype=np.float64)
    vector_to_parameters(vector, module)
    assert module.weight.detach().numpy().ravel().tolist() == [0, 1, 2, 3, 4, 5]
    assert parameters_to_vector(module).tolist() == vector.tolist()
    with pytest.raises(LearningError, match="does not fit"):
        vector_to_parameters(np.zeros(7), module)


def test_initial_vector_depends_only_on_the_seed():
    """TorchModel.initial(seed) is reproducible and leaves the global torch RNG untouched."""
    model = TorchModel(small_cnn, input_shape=(1, 8, 8))
    state = torch.random.get_rng_state()
    assert model.initial(3).tobytes() == model.initial(3).tobytes()
    assert torch.equal(state, torch.random.get_rng_state())
    assert not np.array_equal(model.initial(3), model.initial(4))


def test_gradient_matches_finite_differences():
    """The flattened autograd gradient agrees with a numerical one on a few coordinates."""
    torch.set_default_dtype(torch.float32)
    model = TorchModel(lambda: torch.nn.Linear(4, 3))
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(6, 4)), rng.integers(0, 3, 6)
    params = model.initial(0)
    _, gradient = model.loss_and_gradient(params, features, labels)
    for index in (0, 5, 13):
        shifted = params.copy()
        shifted[index] += 1e-3
        upper = model.loss_and_gradient(shifted, features, labels)[0]
        shifted[index] -= 2e-3
        lower = model.loss_and_gradient(shifted, features, labels)[0]
        assert gradient[index] == pytest.approx((upper - lower) / 2e-3, abs=1e-3)


def test_a_cnn_learns_in_the_federation():
    """A small CNN trained by ten members through exact aggregation beats 80% on digits."""
    torch.set_num_threads(1)
    result = run_federation(FederationConfig(rounds=6), model=TorchModel(small_cnn, input_shape=(1, 8, 8)))
    assert result.final_accuracy > 0.8

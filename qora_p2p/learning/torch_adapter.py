"""PyTorch adapter: any ``torch.nn.Module`` as a qora-p2p `Model`.

Theory of operation
-------------------
The protocol only sees flat float64 parameter vectors. `parameters_to_vector` and
`vector_to_parameters` move a module's parameters (in ``named_parameters()`` order) to and from
such a vector, and `TorchModel` wraps a module factory in the `Model` interface that training,
attacks and the federation use: a seed gives the initial vector (the factory runs under
``torch.manual_seed(seed)`` in a forked RNG state), and each loss/gradient call loads the vector,
runs forward and backward on the CPU, and returns the gradient flattened the same way.

PyTorch is optional and never a dependency of qora-p2p: import this module only when it is
installed (on this machine class, ``pip install torch==2.13.0`` installs the CPU build).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch

from qora_p2p.errors import LearningError
from qora_p2p.learning.models import ParameterLayout

__all__ = ["TorchModel", "parameters_to_vector", "vector_to_parameters"]


def _layout(module: torch.nn.Module) -> ParameterLayout:
    return ParameterLayout(tuple((name, tuple(parameter.shape)) for name, parameter in module.named_parameters()))


def parameters_to_vector(module: torch.nn.Module) -> npt.NDArray[np.float64]:
    """The module's parameters, flattened in ``named_parameters()`` order, as float64."""
    pieces = [parameter.detach().cpu().reshape(-1).to(torch.float64) for parameter in module.parameters()]
    if not pieces:
        return np.zeros(0)
    return torch.cat(pieces).numpy().copy()


def vector_to_parameters(vector: npt.NDArray[np.float64], module: torch.nn.Module) -> None:
    """Load a flat vector (as made by `parameters_to_vector`) into the module's parameters.

    Raises:
        LearningError: the vector's length does not match the module.
    """
    layout = _layout(module)
    if vector.shape != (layout.dimension,):
        raise LearningError(f"vector of shape {vector.shape} does not fit a module of {layout.dimension} parameters")
    pieces = layout.split(np.asarray(vector, dtype=np.float64))
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            parameter.copy_(torch.from_numpy(np.ascontiguousarray(pieces[name])).to(parameter.dtype))


class TorchModel:
    """A `Model` backed by a PyTorch module.

    Args:
        factory: builds a fresh module (called under a seeded RNG for `initial`).
        input_shape: per-sample shape the flat feature rows are reshaped to (e.g. ``(1, 8, 8)``).
        loss: maps (logits, labels) to a scalar loss; cross-entropy by default.
    """

    def __init__(
        self,
        factory: Callable[[], torch.nn.Module],
        input_shape: Sequence[int] | None = None,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = torch.nn.functional.cross_entropy,
    ) -> None:
        self.factory = factory
        self.module = factory()
        self.layout = _layout(self.module)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.loss = loss

    def _inputs(self, features: npt.NDArray[np.float64]) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        return tensor if self.input_shape is None else tensor.reshape(-1, *self.input_shape)

    def initial(self, seed: int) -> npt.NDArray[np.float64]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return parameters_to_vector(self.factory())

    def logits(self, params: npt.NDArray[np.float64], features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        vector_to_parameters(params, self.module)
        with torch.no_grad():
            logits: npt.NDArray[np.float64] = self.module(self._inputs(features)).to(torch.float64).numpy()
        return logits

    def loss_and_gradient(
        self, params: npt.NDArray[np.float64], features: npt.NDArray[np.float64], labels: npt.NDArray[np.int64]
    ) -> tuple[float, npt.NDArray[np.float64]]:
        vector_to_parameters(params, self.module)
        self.module.zero_grad(set_to_none=False)
        loss = self.loss(self.module(self._inputs(features)), torch.from_numpy(np.asarray(labels, dtype=np.int64)))
        loss.backward()
        gradient = torch.cat(
            [
                (parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)).reshape(-1).to(torch.float64)
                for parameter in self.module.parameters()
            ]
        )
        return float(loss.detach()), gradient.numpy().copy()

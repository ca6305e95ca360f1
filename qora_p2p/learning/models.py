"""Small numpy models whose parameters live in one flat float64 vector.

Theory of operation
-------------------
A federation exchanges model *vectors*: every member's update is the difference of two flat
parameter vectors, encoded in fixed point (`qora_p2p.fixedpoint`). A `ParameterLayout` names the
pieces of that vector (weights and biases per layer) and gives numpy views onto them, so a model
works on its layers while training and the protocol only ever sees one vector.

Two models ship: multinomial logistic regression and a ReLU multilayer perceptron, both with a
softmax cross-entropy loss. Initial parameters are a pure function of a seed. Any object with the
same four methods (see `Model`) works with the training, attack and federation code, including the
PyTorch adapter (`qora_p2p.learning.torch_adapter`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from qora_p2p.errors import LearningError

__all__ = [
    "MLP",
    "LogisticRegression",
    "Model",
    "ParameterLayout",
    "build_model",
    "softmax_cross_entropy",
]

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ParameterLayout:
    """Named shapes laid end to end in one flat vector."""

    shapes: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def dimension(self) -> int:
        return sum(math.prod(shape) for _, shape in self.shapes)

    def split(self, vector: Vector) -> dict[str, Vector]:
        """Views of ``vector`` shaped per piece (writes go through to the vector)."""
        if vector.shape != (self.dimension,):
            raise LearningError(f"parameter vector must have shape ({self.dimension},), got {vector.shape}")
        pieces = {}
        offset = 0
        for name, shape in self.shapes:
            size = math.prod(shape)
            pieces[name] = vector[offset : offset + size].reshape(shape)
            offset += size
        return pieces

    def join(self, pieces: dict[str, Vector]) -> Vector:
        """The flat vector of ``pieces`` (a copy), in layout order."""
        return np.concatenate([np.asarray(pieces[name], dtype=np.float64).ravel() for name, _ in self.shapes])


class Model(Protocol):
    """What training, evaluation and attacks need from a model."""

    layout: ParameterLayout

    def initial(self, seed: int) -> Vector:
        """Initial parameters, a pure function of ``seed``."""
        ...

    def logits(self, params: Vector, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Class scores, shape (m, classes)."""
        ...

    def loss_and_gradient(
        self, params: Vector, features: npt.NDArray[np.float64], labels: npt.NDArray[np.int64]
    ) -> tuple[float, Vector]:
        """Mean cross-entropy over the batch and its gradient (flat, like ``params``)."""
        ...


def softmax_cross_entropy(
    logits: npt.NDArray[np.float64], labels: npt.NDArray[np.int64]
) -> tuple[float, npt.NDArray[np.float64]]:
    """Mean cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    probabilities = exponentials / exponentials.sum(axis=1, keepdims=True)
    rows = np.arange(labels.size)
    loss = float(-np.log(np.maximum(probabilities[rows, labels], 1e-300)).mean())
    gradient = probabilities
    gradient[rows, labels] -= 1.0
    gradient /= labels.size
    return loss, gradient


class LogisticRegression:
    """Multinomial logistic regression: ``logits = X W + b``."""

    def __init__(self, features: int, classes: int) -> None:
        if features < 1 or classes < 2:
            raise LearningError(f"logistic regression needs >= 1 feature and >= 2 classes, got {features}, {classes}")
        self.features, self.classes = features, classes
        self.layout = ParameterLayout((("weight", (features, classes)), ("bias", (classes,))))

    def initial(self, seed: int) -> Vector:
        rng = np.random.default_rng(seed)
        vector = np.zeros(self.layout.dimension)
        self.layout.split(vector)["weight"][...] = rng.normal(0.0, 0.01, size=(self.features, self.classes))
        return vector

    def logits(self, params: Vector, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        pieces = self.layout.split(params)
        return features @ pieces["weight"] + pieces["bias"]

    def loss_and_gradient(
        self, params: Vector, features: npt.NDArray[np.float64], labels: npt.NDArray[np.int64]
    ) -> tuple[float, Vector]:
        loss, delta = softmax_cross_entropy(self.logits(params, features), labels)
        gradient = np.empty_like(params)
        pieces = self.layout.split(gradient)
        pieces["weight"][...] = features.T @ delta
        pieces["bias"][...] = delta.sum(axis=0)
        return loss, gradient


class MLP:
    """ReLU multilayer perceptron with He-initialised weights and zero biases."""

    def __init__(self, features: int, hidden: Sequence[int], classes: int) -> None:
        if features < 1 or classes < 2 or any(width < 1 for width in hidden):
            raise LearningError(f"invalid MLP shape: {features} -> {list(hidden)} -> {classes}")
        self.widths = (features, *hidden, classes)
        shapes: list[tuple[str, tuple[int, ...]]] = []
        for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(self.widths)):
            shapes += [(f"weight{layer}", (fan_in, fan_out)), (f"bias{layer}", (fan_out,))]
        self.layout = ParameterLayout(tuple(shapes))

    @property
    def layers(self) -> int:
        return len(self.widths) - 1

    def initial(self, seed: int) -> Vector:
        rng = np.random.default_rng(seed)
        vector = np.zeros(self.layout.dimension)
        pieces = self.layout.split(vector)
        for layer in range(self.layers):
            fan_in, fan_out = self.widths[layer], self.widths[layer + 1]
            pieces[f"weight{layer}"][...] = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=(fan_in, fan_out))
        return vector

    def _forward(self, params: Vector, features: npt.NDArray[np.float64]) -> list[npt.NDArray[np.float64]]:
        pieces = self.layout.split(params)
        activations = [features]
        for layer in range(self.layers):
            output = activations[-1] @ pieces[f"weight{layer}"] + pieces[f"bias{layer}"]
            activations.append(np.maximum(output, 0.0) if layer < self.layers - 1 else output)
        return activations

    def logits(self, params: Vector, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return self._forward(params, features)[-1]

    def loss_and_gradient(
        self, params: Vector, features: npt.NDArray[np.float64], labels: npt.NDArray[np.int64]
    ) -> tuple[float, Vector]:
        activations = self._forward(params, features)
        loss, delta = softmax_cross_entropy(activations[-1], labels)
        pieces = self.layout.split(params)
        gradient = np.empty_like(params)
        grads = self.layout.split(gradient)
        for layer in reversed(range(self.layers)):
            grads[f"weight{layer}"][...] = activations[layer].T @ delta
            grads[f"bias{layer}"][...] = delta.sum(axis=0)
            if layer:
                delta = (delta @ pieces[f"weight{layer}"].T) * (activations[layer] > 0.0)
        return loss, gradient


def build_model(kind: str, features: int, classes: int, hidden: Sequence[int] = (32,)) -> Model:
    """``"logistic"`` or ``"mlp"`` (with ``hidden`` layer widths)."""
    if kind == "logistic":
        return LogisticRegression(features, classes)
    if kind == "mlp":
        return MLP(features, hidden, classes)
    raise LearningError(f"unknown model {kind!r}; known: logistic, mlp")

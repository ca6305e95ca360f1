"""The model a genesis describes: built from its `ModelSpec` and initialised from its seed.

The protocol never imports a model zoo: it agrees on vectors of length P. Whoever starts a chain
(the node's store, inspect, the in-process federation) asks this module for the genesis model's
initial parameters in fixed point and hands them to `qora_p2p.protocol.state.genesis_state`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from qora_p2p.fixedpoint import encode
from qora_p2p.learning.models import Model, build_model
from qora_p2p.protocol.genesis import Genesis, ModelSpec

__all__ = ["initial_model", "model_of"]


def model_of(spec: ModelSpec) -> Model:
    """The numpy model of a logistic or mlp spec (a synthetic spec has none).

    Raises:
        LearningError: a synthetic spec, or a shape the models refuse.
    """
    model = build_model(spec.kind, spec.features, spec.classes, spec.hidden)
    assert model.layout.dimension == spec.dimension, "genesis validation derives the dimension from the same layout"
    return model


def initial_model(genesis: Genesis) -> npt.NDArray[np.int64]:
    """The seeded initial model in fixed point (zeros for synthetic updates)."""
    spec = genesis.model
    if spec.kind == "synthetic":
        return np.zeros(spec.dimension, dtype=np.int64)
    return encode(model_of(spec).initial(spec.seed), genesis.frac_bits).values.astype(np.int64)

"""The learning workload: numpy models, bundled datasets and their partitions, local training,
the Byzantine behaviours of the literature, and an in-process federation that runs them together
through the protocol's round transition."""

from qora_p2p.learning.attacks import ATTACKS, Attack, RoundView, build_attack, register_attack, resolve_attack
from qora_p2p.learning.data import DATASETS, PARTITIONS, Dataset, load_dataset, partition
from qora_p2p.learning.federation import (
    FederationConfig,
    FederationResult,
    RoundRecord,
    federation_genesis,
    run_federation,
)
from qora_p2p.learning.models import MLP, LogisticRegression, Model, ParameterLayout, build_model
from qora_p2p.learning.training import Evaluation, LocalTrainer, TrainingConfig, evaluate, train_local

__all__ = [
    "ATTACKS",
    "DATASETS",
    "MLP",
    "PARTITIONS",
    "Attack",
    "Dataset",
    "Evaluation",
    "FederationConfig",
    "FederationResult",
    "LocalTrainer",
    "LogisticRegression",
    "Model",
    "ParameterLayout",
    "RoundRecord",
    "RoundView",
    "TrainingConfig",
    "build_attack",
    "build_model",
    "evaluate",
    "federation_genesis",
    "load_dataset",
    "partition",
    "register_attack",
    "resolve_attack",
    "run_federation",
    "train_local",
]

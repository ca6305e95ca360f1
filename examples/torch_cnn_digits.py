"""Train a small PyTorch CNN on digits with qora-p2p's in-process federation.

    pip install torch==2.13.0        # the CPU build on this machine class
    python3 examples/torch_cnn_digits.py [--rounds 20] [--byzantine 3 --attack sign_flip]

Ten members hold Dirichlet(0.5) shards of the 8x8 digits; every round each trains the CNN locally,
updates are encoded in fixed point and the protocol's round transition (`compute_round`) aggregates
them exactly with reputation-weighted centered clipping, adds the aggregate to the int64 model, and
updates the reputation ledger, which bans members that keep pulling against the agreed direction
or far outside the round's spread.
"""

from __future__ import annotations

import argparse

import torch

from qora_p2p.learning import FederationConfig, TrainingConfig, run_federation
from qora_p2p.learning.torch_adapter import TorchModel
from qora_p2p.protocol.genesis import RULE_DEFAULT, default_rule_params
from qora_p2p.protocol.ledger import LedgerParams


def small_cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, kernel_size=3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--byzantine", type=int, default=0)
    parser.add_argument("--attack", default="none")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = TorchModel(small_cnn, input_shape=(1, 8, 8))
    config = FederationConfig(
        rule=RULE_DEFAULT,
        rule_params=default_rule_params(RULE_DEFAULT),
        byzantine=args.byzantine,
        attack=args.attack,
        rounds=args.rounds,
        training=TrainingConfig(),
        ledger=LedgerParams(),
        seed=args.seed,
    )
    print(f"CNN with {model.layout.dimension} parameters, {config.members} members, {args.byzantine} Byzantine")
    result = run_federation(
        config,
        model=model,
        on_round=lambda record: print(f"round {record.round:3d}  accuracy {record.accuracy:.3f}  banned {list(record.banned)}"),
    )
    print(f"final accuracy {result.final_accuracy:.3f}; attackers were {list(result.byzantine)}")


if __name__ == "__main__":
    main()

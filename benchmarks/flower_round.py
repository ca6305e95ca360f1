"""The trusted-server baseline for `bench_round.py`: Flower's legacy gRPC server and N client
processes on loopback, each client returning a synthetic update of P float32 values per round.

    python benchmarks/flower_round.py --clients 10 --dim 100000 --rounds 12 --strategy fedmedian

Runs under any interpreter that has ``flwr`` (``pip install 'qora-p2p[bench]'``, or a virtual
environment of its own: Flower pins versions of cryptography and protobuf that may differ from the
project's); `bench_round.py --flower-python PATH` starts it. Prints one JSON object: the wall time
of every round (from one ``aggregate_fit`` to the next: send the global model, every client's fit,
receive, aggregate), ``round_ms_p50`` over rounds 2 onwards, and the configuration.

What differs from qora-p2p, and is not free there: one trusted server, so no agreement, no
signatures, no encryption (plain gRPC on loopback), no durable state, no robust reputation, and
each client sends its update once, to the server, instead of to every peer. Updates are drawn as
qora-p2p's synthetic workload draws them (standard normal, one generator per client and round).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

STRATEGIES = ("fedavg", "fedmedian")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def client(server: str, dimension: int, index: int) -> None:
    import flwr  # noqa: PLC0415 (only under the Flower interpreter)

    class Synthetic(flwr.client.NumPyClient):
        def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
            return [np.zeros(dimension, dtype=np.float32)]

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]:
            rng = np.random.default_rng([index, int(config.get("round", 0))])
            return [rng.standard_normal(dimension).astype(np.float32)], 1, {}

    flwr.client.start_client(server_address=server, client=Synthetic().to_client(), insecure=True)


def server(clients: int, dimension: int, rounds: int, strategy_name: str) -> dict[str, Any]:
    import flwr  # noqa: PLC0415
    from flwr.server.strategy import FedAvg, FedMedian  # noqa: PLC0415

    base = FedMedian if strategy_name == "fedmedian" else FedAvg
    ends: list[float] = []

    class Timed(base):  # type: ignore[misc, valid-type]
        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            result = super().aggregate_fit(server_round, results, failures)
            ends.append(time.perf_counter())
            return result

    strategy = Timed(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=clients,
        min_available_clients=clients,
        on_fit_config_fn=lambda server_round: {"round": server_round},
        initial_parameters=flwr.common.ndarrays_to_parameters([np.zeros(dimension, dtype=np.float32)]),
    )
    address = f"127.0.0.1:{_free_port()}"
    children = [
        subprocess.Popen(  # noqa: S603 (this interpreter, this file)
            [sys.executable, __file__, "client", "--server", address, "--dim", str(dimension), "--index", str(index)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for index in range(clients)
    ]
    started = time.perf_counter()
    try:
        flwr.server.start_server(server_address=address, config=flwr.server.ServerConfig(num_rounds=rounds), strategy=strategy, grpc_max_message_length=1 << 30)
    finally:
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
    rounds_ms = [round((b - a) * 1000, 2) for a, b in zip([started, *ends], ends, strict=False)]
    return {
        "framework": f"flwr {flwr.__version__}",
        "strategy": strategy_name,
        "clients": clients,
        "dimension": dimension,
        "rounds": rounds,
        "round_ms": rounds_ms,
        "round_ms_p50": statistics.median(rounds_ms[1:]) if len(rounds_ms) > 1 else None,
    }


def main(argv: list[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments.add_argument("role", nargs="?", default="server", choices=("server", "client"))
    arguments.add_argument("--clients", type=int, default=10)
    arguments.add_argument("--dim", type=int, default=100_000)
    arguments.add_argument("--rounds", type=int, default=12)
    arguments.add_argument("--strategy", choices=STRATEGIES, default="fedmedian")
    arguments.add_argument("--server", help="client: the server's HOST:PORT")
    arguments.add_argument("--index", type=int, default=0, help="client: its index (seeds its updates)")
    args = arguments.parse_args(argv)
    if args.role == "client":
        client(args.server, args.dim, args.index)
        return 0
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    print(json.dumps(server(args.clients, args.dim, args.rounds, args.strategy)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Round results shared between simulated members: one computation per distinct input set, the
same answer `compute_round` gives, and errors remembered as errors."""

from qora_p2p.errors import QoraError
from qora_p2p.protocol.effects import Compute
from qora_p2p.protocol.state import compute_round, genesis_state
from qora_p2p.sim import SimConfig, Simulation
from qora_p2p.sim.rounds import RoundCache


def inputs():
    simulation = Simulation(SimConfig(nodes=4, dimension=8, seed=3))
    genesis = simulation.genesis
    payloads = tuple(simulation._payload(member, 1, None) for member in range(4))
    return genesis, genesis_state(genesis), payloads


def test_members_with_equal_inputs_share_one_result_equal_to_compute_round():
    genesis, state, payloads = inputs()
    cache = RoundCache(genesis)
    first = cache.result(Compute(0, state, (0, 1, 2, 3), payloads, ()))
    # Another member's copy of the same bytes (not the same objects) finds the same result.
    again = cache.result(Compute(7, state, (0, 1, 2, 3), tuple(bytes(bytearray(payload)) for payload in payloads), ()))
    assert again is first and len(cache.results) == 1
    assert not isinstance(first, QoraError)
    assert first.state.model_digest() == compute_round(genesis, state, (0, 1, 2, 3), payloads).state.model_digest()
    other = cache.result(Compute(1, state, (0, 1, 2), payloads[:3], ()))
    assert other is not first and len(cache.results) == 2


def test_a_refused_input_set_is_remembered_as_its_error():
    genesis, state, payloads = inputs()
    cache = RoundCache(genesis)
    short = (payloads[0][:-4], *payloads[1:])
    error = cache.result(Compute(0, state, (0, 1, 2, 3), short, ()))
    assert isinstance(error, QoraError)
    assert cache.result(Compute(1, state, (0, 1, 2, 3), short, ())) is error

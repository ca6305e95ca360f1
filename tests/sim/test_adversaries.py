"""Every shipped adversary runs against the protocol in the simulator and the protocol survives it:
every checker holds (safety, certificates, stored chains, storage, bans, liveness after the faults).
Each attack is shown to happen; the attacks that still break the protocol are strict xfails whose
reason says how."""

import pytest

from qora_p2p.protocol.limits import SYNC_RETRY_MS
from qora_p2p.sim import ADVERSARIES, SimConfig, Simulation, replay_command

CONFIGS = [(4, 1, "none", 0), (7, 2, "crash", 1), (10, 3, "chaos", 2), (7, 2, "stall", 3)]
BREAKS: set[str] = set()  # adversaries that still break the protocol (none: each has a regression test below)


def describe(config, result):
    return f"{replay_command(config)}: {result.violations[:2]}"


def simulate(name, nodes, byzantine, faults, seed, rounds=4):
    """A simulation with every Byzantine member driven by ``name``, run; and its result."""
    config = SimConfig(nodes=nodes, byzantine=byzantine, rounds=rounds, seed=seed, dimension=16, faults=faults, adversary=name)
    simulation = Simulation(config)
    return simulation, simulation.run()


def run(name, nodes, byzantine, faults, seed, rounds=4):
    """The configuration, result and adversaries of `simulate`."""
    simulation, result = simulate(name, nodes, byzantine, faults, seed, rounds)
    return simulation.config, result, [node.adversary for node in simulation.nodes if node.adversary is not None]


@pytest.mark.parametrize(("nodes", "byzantine", "faults", "seed"), CONFIGS)
@pytest.mark.parametrize("name", [name for name in ADVERSARIES if name not in BREAKS])
def test_the_protocol_survives_the_adversary(name, nodes, byzantine, faults, seed):
    """f members run the adversary, under faults: every checker holds and every round commits."""
    config, result, _ = run(name, nodes, byzantine, faults, seed)
    assert result.ok, describe(config, result)


def test_refused_payloads_are_refused_at_admission_and_never_listed():
    """The signed updates the decoder refuses reach every member, are penalised, and no committed
    record lists one (the proposer's values listing them never validate)."""
    simulation, result = simulate("refused_payload", 7, 2, "none", 4)
    config = simulation.config
    assert result.ok, describe(config, result)
    refused = {update.digest for node in simulation.nodes if node.adversary is not None for update in node.adversary.refused.values()}
    assert len(refused) >= config.rounds and result.penalties >= len(refused)
    honest = [node for node in simulation.nodes if node.index not in config.byzantine_members]
    listed = {digest for node in honest for record in node.core.catchup.records for _, digest in record.value.inputs}
    assert len(listed) >= config.rounds * (config.nodes - config.byzantine) and not listed & refused


def test_certificates_of_exactly_a_quorum_reach_the_members_told_otherwise():
    """The equivocator pushes quorum certificates holding its signature to members that hold its
    nil or other precommit, and short ones to all; every commit still verifies."""
    config, result, adversaries = run("equivocating_precommits", 10, 3, "none", 5)
    assert result.ok, describe(config, result)
    assert sum(len(adversary.pushed) for adversary in adversaries) >= config.rounds


def test_forged_catch_up_is_tried_in_every_variant_and_never_installed():
    """Laggards (crashes, a partition) are served forged chains, forged certificates, repeated
    rounds, wrong snapshots, duplicates and unsolicited responses; nothing of it is stored."""
    variants = set()
    for seed in range(3):
        config, result, adversaries = run("forged_history", 10, 3, "chaos", seed)
        assert result.ok, describe(config, result)
        for adversary in adversaries:
            variants |= set(adversary.forged)
    assert variants >= {"forged_chain", "forged_certificate", "repeated", "snapshot_mismatch", "twice", "unsolicited", "pushed_record"}


def test_bogus_digests_cost_views_not_rounds():
    """A proposer listing digests no one holds makes its views fail; later views commit."""
    config, result, _ = run("bogus_digests", 7, 2, "none", 6, rounds=6)
    assert result.ok, describe(config, result)
    assert any(max(stats.views) > 0 for stats in result.rounds.values())


def test_floods_of_next_round_updates_and_of_sync_requests_are_survived():
    """Hundreds of full-size updates of the next rounds, and sync requests ten times a second, from
    every Byzantine member: every round commits."""
    config, result, _ = run("flood_updates", 7, 2, "lossy", 7)
    assert result.ok, describe(config, result)
    assert result.messages["adversary"] > 250  # two members, every 300 ms, four updates to each of five
    config, result, adversaries = run("flood_sync", 7, 2, "none", 7)
    assert result.ok, describe(config, result)
    assert all(adversary.answers > 0 for adversary in adversaries)


def test_a_member_claiming_to_be_far_ahead_is_asked_but_cannot_hold_anyone_off():
    """Hellos a million rounds ahead make members ask the liar (who never answers); rounds go on."""
    config, result, _ = run("far_ahead", 7, 2, "none", 8)
    assert result.ok, describe(config, result)
    silent = run("silent_member", 7, 2, "none", 8)[1]
    assert result.messages["SyncRequest"] > silent.messages["SyncRequest"]


# ------------------------------------------------------------------------------------- protocol bugs


def test_stripped_catch_up_history_reaches_a_laggard():
    """The stripped_history attack is exercised: a laggard asks the adversary and is served."""
    _, _, adversaries = run("stripped_history", 10, 3, "chaos", 0)
    assert sum(adversary.stripped for adversary in adversaries) >= 1


@pytest.mark.parametrize("seed", [0, 1])
def test_stripped_catch_up_history_is_never_stored(seed):
    """Every record a laggard installs from a stripped response must verify on its own."""
    config, result, _ = run("stripped_history", 10, 3, "chaos", seed)
    assert result.ok, describe(config, result)


@pytest.mark.parametrize(("nodes", "byzantine", "faults", "seed"), [(4, 1, "none", 0), (7, 2, "partition", 1), (5, 1, "stall", 2)])
def test_more_than_two_versions_of_an_update_cannot_stop_a_round(nodes, byzantine, faults, seed):
    """An equivocator's many versions must cost it its ban, never the honest members their round."""
    config, result, _ = run("update_versions", nodes, byzantine, faults, seed)
    assert result.ok, describe(config, result)


@pytest.mark.parametrize("seed", [10, 28])
def test_bogus_digests_after_a_partition_cannot_stop_a_round(seed):
    """Missing updates must still be fetched by sender while a bogus value's digests are fetched in vain."""
    config, result, _ = run("bogus_digests", 6, 1, "stall", seed, rounds=3)
    assert result.ok, describe(config, result)


def test_sync_requests_are_not_answered_faster_than_an_honest_member_asks():
    """No honest member answers one peer's sync requests more than twice per SYNC_RETRY_MS."""
    config, result, adversaries = run("flood_sync", 7, 2, "none", 7, rounds=6)
    honest = config.nodes - config.byzantine
    windows = result.sim_ms / SYNC_RETRY_MS + 1
    for adversary in adversaries:
        assert adversary.answers <= 2 * honest * windows, f"{adversary.answers} answers in {result.sim_ms} ms from {honest} members"

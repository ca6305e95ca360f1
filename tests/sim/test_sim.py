"""The protocol under the deterministic simulator: many seeds, fault schedules, and the named
Byzantine cases. A failing run's message names the seed; `qora-sim ... --seed S` replays it."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qora_p2p.sim import FAULT_PROFILES, STRATEGIES, Fault, SimConfig, Simulation, run_simulation
from qora_p2p.sim.faults import STALL_MS

SMALL = [(4, 1), (5, 1), (7, 2)]


def describe(config, result):
    return f"seed {config.seed} {config}: {result.violations[:3]}"


@pytest.mark.parametrize("seed", range(240))
def test_many_seeds_agree_and_finish(seed):
    """Across sizes, fault profiles and Byzantine strategies, every check holds and every round
    commits (a fast subset; `-m slow` runs the long sweep)."""
    nodes, byzantine = SMALL[seed % len(SMALL)]
    faults = list(FAULT_PROFILES)[seed // 3 % len(FAULT_PROFILES)]
    strategy = ["mixed", *STRATEGIES][seed // 15 % (len(STRATEGIES) + 1)]
    config = SimConfig(nodes=nodes, byzantine=byzantine, rounds=3, seed=seed, faults=faults, strategy=strategy, dimension=16)
    result = run_simulation(config)
    assert result.ok, describe(config, result)


def test_same_seed_same_trace_other_seed_other_trace():
    """A run is a function of its seed: identical trace hashes, and a different seed differs."""
    config = SimConfig(nodes=7, byzantine=2, rounds=3, seed=42, faults="chaos")
    assert run_simulation(config).trace_hash == run_simulation(config).trace_hash
    assert run_simulation(SimConfig(nodes=7, byzantine=2, rounds=3, seed=43, faults="chaos")).trace_hash != run_simulation(config).trace_hash


@pytest.mark.parametrize("seed", range(6))
def test_an_equivocating_proposer_never_splits_honest_members(seed):
    """Proposers sending different values to different halves: agreement holds, rounds commit."""
    config = SimConfig(nodes=7, byzantine=2, rounds=4, seed=seed, strategy="equivocate_proposals")
    result = run_simulation(config)
    assert result.ok, describe(config, result)


@pytest.mark.parametrize(("nodes", "seed"), [(4, 0), (7, 1), (10, 2)])
def test_f_silent_members_cannot_stop_progress(nodes, seed):
    """With f members saying nothing at all, every round still commits."""
    config = SimConfig(nodes=nodes, byzantine=(nodes - 1) // 3, rounds=4, seed=seed, strategy="silent")
    result = run_simulation(config)
    assert result.ok, describe(config, result)


def test_f_plus_one_silent_members_stop_progress_but_never_break_agreement():
    """With f + 1 silent members no round can commit, and nothing unsafe happens meanwhile."""
    config = SimConfig(nodes=7, byzantine=3, rounds=2, seed=5, strategy="silent")
    result = run_simulation(config)
    assert not result.ok and result.safe
    assert all(violation.startswith("liveness") for violation in result.violations)
    assert max(result.committed.values()) == 0


@pytest.mark.parametrize("seed", range(4))
def test_a_partitioned_minority_never_commits_alone_and_catches_up(seed):
    """Members cut off from the rest commit nothing while partitioned, and after the heal they
    hold every round like everyone else."""
    start, heal = 1500, 7000
    minority = (2, 5)
    config = SimConfig(nodes=7, byzantine=0, rounds=8, seed=seed, schedule=(Fault(start, "partition", minority), Fault(heal, "heal")))
    result = run_simulation(config)
    assert result.ok, describe(config, result)
    for member in minority:
        during = [round_number for round_number, at in result.commit_times.get(member, []) if start + 500 < at < heal]
        assert during == [], f"member {member} committed rounds {during} while partitioned"
    majority_rounds_during = [r for r, at in result.commit_times[0] if start + 500 < at < heal]
    assert majority_rounds_during, "the majority kept committing"


@pytest.mark.parametrize("seed", range(10))
def test_restarts_mid_round_never_double_sign(seed):
    """Crashing and restarting members at arbitrary moments never makes one sign two different
    contents for a slot (the checker watches every signature) and the network recovers."""
    config = SimConfig(nodes=7, byzantine=1, rounds=5, seed=seed, faults="crash", strategy="conflicting_votes")
    result = run_simulation(config)
    assert result.ok, describe(config, result)
    assert result.events["resumed"] > 0 or result.events["round_started"] > 0


@pytest.mark.parametrize("seed", range(4))
def test_an_equivocator_is_banned_on_every_honest_member_in_the_same_round(seed):
    """Equivocation evidence is committed once, so every honest member bans the culprit in the
    same round."""
    config = SimConfig(nodes=7, byzantine=2, rounds=5, seed=seed, strategy="equivocate_updates")
    result = run_simulation(config)
    assert result.ok, describe(config, result)
    culprits = set(config.byzantine_members)
    first = {culprit: min(seen[culprit] for seen in result.proven_at.values() if culprit in seen) for culprit in culprits}
    for member, seen in result.proven_at.items():
        assert set(seen) >= culprits, f"member {member} never banned {culprits - set(seen)}"
        committed = {round_number for round_number, _ in result.commit_times[member]}
        for culprit, round_number in first.items():
            # A member that committed that round itself banned the culprit in it; one that caught up
            # over it with a snapshot holds the same ledger (state equality is checked every commit).
            if round_number in committed:
                assert seen[culprit] == round_number, f"member {member} banned {culprit} in {seen[culprit]}, others in {round_number}"


fault_schedules = st.lists(
    st.tuples(st.integers(200, 9000), st.sampled_from(["crash", "partition"]), st.integers(0, 6), st.integers(500, 4000)),
    max_size=4,
)


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(fault_schedules, st.integers(0, 2**16))
def test_generated_fault_schedules_never_break_safety(schedule, seed):
    """Hypothesis-chosen crashes and partitions (each followed by a restart or heal): never a
    safety violation, and all rounds commit once the faults are over."""
    faults = []
    for at, kind, member, duration in schedule:
        if kind == "crash":
            faults += [Fault(at, "crash", (member,)), Fault(at + duration, "restart", (member,))]
        else:
            faults += [Fault(at, "partition", (member, (member + 3) % 7)), Fault(at + duration, "heal")]
    config = SimConfig(nodes=7, byzantine=1, rounds=4, seed=seed, strategy="conflicting_votes", schedule=tuple(faults))
    result = run_simulation(config)
    assert result.safe, describe(config, result)
    assert result.ok, describe(config, result)


@pytest.mark.slow
def test_long_sweep_of_random_configurations():
    """Two thousand random configurations up to 16 members and f Byzantine: all checks hold."""
    failures = []
    for seed in range(2000):
        rng = random.Random(seed)
        nodes = rng.choice([4, 5, 7, 10, 13, 16])
        config = SimConfig(
            nodes=nodes,
            byzantine=rng.randint(0, (nodes - 1) // 3),
            rounds=rng.choice([3, 5]),
            seed=seed,
            faults=rng.choice(list(FAULT_PROFILES)),
            strategy=rng.choice(["mixed", *STRATEGIES]),
            dimension=rng.choice([10, 100]),
        )
        result = run_simulation(config)
        if not result.ok:
            failures.append(describe(config, result))
    assert not failures, failures[:5]


@pytest.mark.parametrize(("seed", "faults"), [(1016, "lossy"), (1018, "crash"), (1019, "chaos")])
def test_a_certificate_adopted_over_an_equivocators_nil_keeps_every_signature(seed, faults):
    """A member that adopts a certified value while holding the conflicting voter's other precommit
    still commits all the certificate's signatures: every stored record verifies with a quorum
    (these runs committed records with 2 of 3 signatures before)."""
    config = SimConfig(nodes=4, byzantine=1, rounds=4, seed=seed, dimension=16, faults=faults, strategy="conflicting_votes")
    result = run_simulation(config)
    assert result.ok, describe(config, result)


def test_an_exception_in_a_core_is_a_violation_naming_member_time_and_traceback():
    """A core that raises does not kill the run: the simulator records where and stops there."""
    simulation = Simulation(SimConfig(nodes=4, byzantine=0, rounds=2, seed=3, dimension=16))

    def broken(round_number, payload, now_ms):
        raise RuntimeError(f"broken core in round {round_number}")

    simulation.nodes[2].core.submit_update = broken  # type: ignore[method-assign]
    result = simulation.run()
    assert len([v for v in result.violations if v.startswith("exception")]) == 1, result.violations
    first = result.violations[0]
    assert first.startswith("exception: member 2 at ") and "handling trained" in first and "RuntimeError: broken core in round 1" in first


@pytest.mark.parametrize(("nodes", "byzantine", "strategy", "seed"), [(4, 0, "mixed", 0), (7, 0, "mixed", 1), (10, 0, "mixed", 2), (7, 2, "silent", 3), (10, 3, "withhold_votes", 4)])
def test_a_long_stall_without_a_quorum_anywhere_heals_and_every_member_commits_again(nodes, byzantine, strategy, seed):
    """Two halves, neither a quorum, for 40 s (views climb to the timeout cap, message budget
    windows pass): after the heal every honest member commits within the progress bound, with
    or without Byzantine members."""
    config = SimConfig(nodes=nodes, byzantine=byzantine, rounds=4, seed=seed, dimension=16, faults="stall", strategy=strategy)
    result = run_simulation(config)
    assert result.ok, describe(config, result)
    assert result.sim_ms > STALL_MS, "the run went through the stall"

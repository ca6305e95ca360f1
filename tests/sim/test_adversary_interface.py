"""The adversary interface: an adversary sees every honest message as it is sent (decoded and as
bytes), knows its keys and the time, sends any bytes to anyone now or later, is woken when it
asks, and its own bugs are reported as such; runs stay replayable from their configuration."""

import pytest

from qora_p2p.cli.sim import main
from qora_p2p.errors import QoraError
from qora_p2p.protocol.messages import PROTOCOL_VERSION, Hello
from qora_p2p.sim import ADVERSARIES, BaseAdversary, SimConfig, Simulation, run_simulation


class Tapped(Simulation):
    """A simulation that also keeps every (sender, receiver, bytes) handed to the links."""

    def __init__(self, *arguments, **keywords):
        super().__init__(*arguments, **keywords)
        self.tapped = []

    def _transmit_all(self, sender, receivers, data):
        receivers = list(receivers)
        self.tapped.extend((sender, receiver, data, self.now) for receiver in receivers if receiver != sender)
        super()._transmit_all(sender, receivers, data)


class Recorder(BaseAdversary):
    """Runs its honest core unchanged; records what it sees and, when woken, sends junk and a
    delayed Hello."""

    observes = True

    def __init__(self):
        self.seen, self.delivered_to_me, self.woken = [], [], []

    def start(self, world):
        world.wake(250, "first")

    def observe(self, seen, world):
        self.seen.append(seen)

    def delivered(self, sender, data, message, world):
        self.delivered_to_me.append((sender, data, message))

    def wake(self, tag, world):
        self.woken.append((tag, world.now))
        if tag == "first":
            world.broadcast(b"\xc1 not msgpack")
            world.send(world.honest[0], Hello(PROTOCOL_VERSION, 1, bytes(32)), delay_ms=100)
            world.wake(250, "second")


CONFIG = SimConfig(nodes=7, byzantine=2, rounds=3, seed=11, dimension=16)


def test_an_adversary_sees_every_honest_message_as_it_is_sent():
    """Every honest send, broadcast or not, reaches `observe` once, as the message and its exact
    bytes, with sender, receivers and time, before any delivery."""
    recorder = Recorder()
    member = CONFIG.byzantine_members[0]
    simulation = Tapped(CONFIG, adversaries={member: recorder})
    result = simulation.run()
    assert result.ok, result.violations[:3]
    honest = set(range(CONFIG.nodes)) - set(CONFIG.byzantine_members)
    expected = sorted((sender, receiver, data, at) for sender, receiver, data, at in simulation.tapped if sender in honest)
    observed = sorted((seen.sender, receiver, seen.data, seen.at_ms) for seen in recorder.seen for receiver in seen.receivers)
    assert observed == expected and len(observed) > 100
    assert all(seen.message.encode() == seen.data for seen in recorder.seen)
    assert {seen.sender for seen in recorder.seen} == honest


def test_an_adversary_is_delivered_its_messages_woken_on_time_and_sends_what_it_likes():
    """Wake-ups come at the asked time; junk bytes reach the honest members (and are penalised);
    a delayed send leaves when asked; messages to the member reach `delivered` first."""
    recorder = Recorder()
    member = CONFIG.byzantine_members[0]
    simulation = Tapped(CONFIG, adversaries={member: recorder})
    quiet = run_simulation(CONFIG)
    result = simulation.run()
    assert [tag for tag, _ in recorder.woken] == ["first", "second"]
    first, second = (at for _, at in recorder.woken)
    assert first == 250 and second == 500
    junk = [receiver for sender, receiver, data, at in simulation.tapped if sender == member and data.startswith(b"\xc1")]
    assert sorted(junk) == [peer for peer in range(CONFIG.nodes) if peer != member] and result.penalties > quiet.penalties
    hello = [at for sender, receiver, data, at in simulation.tapped if sender == member and data == Hello(PROTOCOL_VERSION, 1, bytes(32)).encode()]
    assert hello == [350]
    assert recorder.delivered_to_me and all(message is not None for _, _, message in recorder.delivered_to_me)


def test_an_adversary_holds_its_colluders_keys_and_no_honest_one():
    """`identity_of` gives a Byzantine member's key and refuses an honest member's."""
    keys: dict[str, object] = {}

    class Keys(BaseAdversary):
        def start(self, world):
            keys["colluders"] = [world.identity_of(member).public_key for member in world.byzantine]
            keys["me"] = world.identity.public_key
            with pytest.raises(ValueError, match="honest"):
                world.identity_of(world.honest[0])

    members = CONFIG.byzantine_members
    simulation = Simulation(CONFIG, adversaries={members[0]: Keys()})
    simulation.run()
    assert keys["colluders"] == [simulation.identities[member].public_key for member in members]
    assert keys["me"] == simulation.identities[members[0]].public_key


def test_an_adversary_that_raises_is_reported_as_the_adversarys_fault():
    """Its exception is a violation naming the adversary's method, not the protocol's."""

    class Broken(BaseAdversary):
        def start(self, world):
            world.wake(100)

        def wake(self, tag, world):
            raise KeyError("the adversary's own bug")

    result = run_simulation(CONFIG, adversaries={CONFIG.byzantine_members[0]: Broken()})
    assert result.violations[0].startswith(f"adversary exception: member {CONFIG.byzantine_members[0]} at 100 ms, handling Broken.wake")
    assert "KeyError" in result.violations[0]


def test_only_byzantine_members_and_known_names_take_adversaries():
    """An honest member cannot be given an adversary, nor can a configuration name an unknown one."""
    honest = next(member for member in range(CONFIG.nodes) if member not in CONFIG.byzantine_members)
    with pytest.raises(QoraError, match="Byzantine members only"):
        Simulation(CONFIG, adversaries={honest: BaseAdversary()})
    with pytest.raises(QoraError, match="unknown adversary"):
        Simulation(SimConfig(nodes=4, byzantine=1, adversary="nobody"))


def test_a_named_adversary_replays_from_its_configuration():
    """The configuration's text names the adversary only when there is one (so pinned traces
    hold), and the same configuration gives the same trace."""
    assert "adversary" not in str(CONFIG)
    config = SimConfig(nodes=7, byzantine=2, rounds=3, seed=11, dimension=16, adversary="mixed")
    assert str(config).endswith(", adversary='mixed')")
    assert [config.adversary_of(member) for member in config.byzantine_members] == list(ADVERSARIES)[:2]
    first, second = run_simulation(config), run_simulation(config)
    assert first.ok and first.trace_hash == second.trace_hash
    assert first.trace_hash != run_simulation(CONFIG).trace_hash


def test_a_coreless_adversary_sends_nothing_it_did_not_choose():
    """silent_member has no core: nothing from it ever reaches the links."""
    config = SimConfig(nodes=7, byzantine=2, rounds=3, seed=5, dimension=16, adversary="silent_member")
    simulation = Tapped(config)
    result = simulation.run()
    assert result.ok
    assert not [sender for sender, *_ in simulation.tapped if sender in config.byzantine_members]
    # It does not hear either: nothing is carried to it, so its links draw nothing.
    assert not [receiver for _, receiver, *_ in simulation.tapped if receiver in config.byzantine_members]
    assert all(result.bytes_received[member] == 0 for member in config.byzantine_members)


class Listener(BaseAdversary):
    """No core, but it hears: every message sent to its member reaches `delivered`."""

    runs_core = False

    def __init__(self):
        self.heard = 0

    def delivered(self, sender, data, message, world):
        self.heard += 1


def test_a_coreless_adversary_that_hears_is_delivered_everything_sent_to_it():
    config = SimConfig(nodes=7, byzantine=2, rounds=2, seed=5, dimension=16)
    listener = Listener()
    member = config.byzantine_members[0]
    simulation = Tapped(config, adversaries={member: listener})
    result = simulation.run()
    assert result.ok, result.violations[:3]
    carried = [receiver for _, receiver, *_ in simulation.tapped if receiver == member]
    assert listener.heard > 20 and len(carried) >= listener.heard and result.bytes_received[member] > 0


def test_qora_sim_runs_an_adversary_and_prints_its_replay_line(capsys):
    """--adversary reaches the configuration; a failing run's replay line carries it."""
    assert main(["--nodes", "4", "--byzantine", "1", "--rounds", "2", "--seed", "1", "--model-dim", "10", "--quiet", "--adversary", "far_ahead"]) == 0
    assert "adversary far_ahead" in capsys.readouterr().out
    assert main(["--nodes", "4", "--byzantine", "2", "--rounds", "1", "--seed", "3", "--model-dim", "10", "--quiet", "--adversary", "silent_member", "--faults", "none"]) == 1
    assert "--adversary silent_member" in capsys.readouterr().err

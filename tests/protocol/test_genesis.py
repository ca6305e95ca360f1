"""Genesis files: strict validation with named fields, a formatting-independent hash."""

import re
import tomllib
from typing import Any

import pytest

from qora_p2p.errors import ConfigError
from qora_p2p.identity import Identity, public_key_hex
from qora_p2p.protocol.genesis import (
    RULE_DEFAULT,
    Genesis,
    Member,
    ModelSpec,
    Timing,
    apply_settings,
    default_rule_params,
    describe_settings,
    dump_genesis,
    genesis_from_fragment,
    load_genesis,
    parse_genesis,
)
from qora_p2p.protocol.ledger import LedgerParams
from qora_p2p.schema import settings_of


def document(count=4, **overrides):
    keys = keys_of(count)
    base = {
        "network_id": "test-net",
        "model": {"kind": "logistic", "features": 64, "classes": 10},
        "aggregation": {"rule": "median"},
        "members": [{"name": f"n{index}", "public_key": key, "address": f"127.0.0.1:{7000 + index}"} for index, key in enumerate(keys)],
    }
    base.update(overrides)
    return base


def members_toml(count, ipv6_first=False):
    """``[[members]]`` tables for ``count`` members with fixed keys (so hashes can be pinned)."""
    tables = []
    for index, key in enumerate(keys_of(count)):
        address = f"[::1]:{7000 + index}" if ipv6_first and index == 0 else f"127.0.0.1:{7000 + index}"
        tables.append(f'[[members]]\nname = "n{index}"\npublic_key = "{key}"\naddress = "{address}"\n')
    return "\n".join(tables)


def keys_of(count):
    return [public_key_hex(Identity.from_seed(bytes([index + 1]) * 32).public_key) for index in range(count)]


# Genesis files covering every table, both Q16 and integer spellings, IPv6, a disabled ledger and
# float and integer rule parameters. Their hashes were recorded before the schema was made generic:
# a changed hash would split every network created earlier from the nodes that load it now.
PINNED_FILES = {
"logistic-default": '''network_id = "pin-a"
[model]
kind = "logistic"
features = 64
classes = 10
[aggregation]
rule = "centered_clipping"
tau_scale = 1.0
center = "previous"
''' + members_toml(4),
"mlp-tuned": '''version = 1
network_id = "pin-b"
[model]
kind = "mlp"
features = 30
classes = 2
hidden = [16, 8]
seed = 99
[fixed_point]
frac_bits = 20
[aggregation]
rule = "trimmed_mean"
trim = 2
[reputation]
initial = 0.75
reward = 0.03
penalty = 0.2
opposing_penalty = 0.05
absence_penalty = 0.01
outlier_ratio = 2.5
ban_below = 0.1
ban_rounds = 7
weight_cap = 0.0
[timing]
round_timeout_ms = 9000
collect_timeout_ms = 150
propose_timeout_ms = 2000
timeout_cap_ms = 20000
''' + members_toml(7),
"synthetic-no-reputation": '''network_id = "pin-c"
[model]
kind = "synthetic"
dimension = 1000
seed = 5
[aggregation]
rule = "nnm+centered_clipping"
tau = 0.5
iterations = 3
f = 1
[reputation]
enabled = false
''' + members_toml(5, ipv6_first=True),
"median-int-params": '''network_id = "pin-d"
[model]
kind = "logistic"
features = 8
classes = 3
dimension = 27
[aggregation]
rule = "krum"
f = 1
[reputation]
reward = 1
ban_rounds = 1000000000
''' + members_toml(10),
}
PINNED_HASHES = {
    "logistic-default": "284b65cd089f182f3f74251e93d655a425664ca929c952176ed3e4ffb779c534",
    "mlp-tuned": "b9adbe94a71b8d851cb5e3ddd9fee8acf55c64cc0d82ca1fa775c1cb4ceb652b",
    "synthetic-no-reputation": "094deb349a497d4b7886a85d38727b9bb15ae6a5a485c948fcd37f728f58c0e0",
    "median-int-params": "6d2b01c625f3da7ddd0a3dd5865c7a3618f118555213f72be4a4f6d1147c01e1",
}


def test_round_trip_keeps_every_field_and_the_hash(tmp_path):
    """dump then load gives an equal genesis with the same hash."""
    genesis = parse_genesis(document(aggregation={"rule": "centered_clipping", "tau_scale": 1.0, "center": "previous"}))
    path = tmp_path / "peers.toml"
    path.write_text(dump_genesis(genesis))
    again = load_genesis(path)
    assert again == genesis and again.hash == genesis.hash
    assert genesis.size == 4 and genesis.faulty == 1 and genesis.quorum == 3 and genesis.inputs_min == 3
    assert genesis.model.dimension == 650 and genesis.centered_on_previous


def test_hash_ignores_formatting_but_not_content():
    """Comments and key order do not change the hash; any value does."""
    text = dump_genesis(parse_genesis(document()))
    reordered = text.replace('version = 1\nnetwork_id = "test-net"', '# a comment\nnetwork_id   =   "test-net"\nversion = 1')
    assert reordered != text
    assert parse_genesis(tomllib.loads(reordered)).hash == parse_genesis(tomllib.loads(text)).hash
    assert parse_genesis(document(network_id="other")).hash != parse_genesis(document()).hash
    assert parse_genesis(document(fixed_point={"frac_bits": 20})).hash != parse_genesis(document()).hash


def test_quorum_intersection_for_every_size():
    """Any two quorums overlap in more than f members, for every n."""
    for count in range(1, 40):
        genesis = parse_genesis(document(count=count, aggregation={"rule": "fedavg"}))
        assert 2 * genesis.quorum - count > genesis.faulty
        assert genesis.quorum <= count - genesis.faulty


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["members"][2].update(public_key=d["members"][0]["public_key"]), r"members\[2\]\.public_key: duplicates members\[0\]"),
        (lambda d: d["members"][1].update(address="127.0.0.1:7000"), r"members\[1\]\.address: duplicates"),
        (lambda d: d["members"][1].update(name="n0"), r"members\[1\]\.name: duplicates"),
        (lambda d: d["members"][3].update(public_key="zz" * 32), r"members\[3\]\.public_key"),
        (lambda d: d["members"][3].update(public_key="ab"), r"members\[3\]\.public_key"),
        (lambda d: d["members"][0].update(address="localhost"), r"members\[0\]\.address: must be host:port"),
        (lambda d: d["members"][0].update(address="127.0.0.1:70000"), r"port must be in 1\.\.65535"),
        (lambda d: d["members"][0].update(colour="red"), r"members\[0\]\.colour: unknown key 'colour'"),
        (lambda d: d.pop("network_id"), r"network_id: missing"),
        (lambda d: d.update(network_id=5), r"network_id: must be str"),
        (lambda d: d.update(surprise=1), r"surprise: unknown key"),
        (lambda d: d["model"].update(kind="gpt"), r"model\.kind: must be one of"),
        (lambda d: d["model"].update(dimension=7), r"model\.dimension: 7 does not match the model"),
        (lambda d: d["model"].update(features=True), r"model\.features: must be int"),
        (lambda d: d["aggregation"].update(rule="geomed"), r"aggregation\.rule: unknown rule"),
        (lambda d: d["aggregation"].update(rule="krum", f=1), r"krum needs n >= 2f\+3.*n - f = 3 updates"),
        (lambda d: d["aggregation"].update(center="zero"), r"aggregation\.center"),
        (lambda d: d.update(reputation={"penalty": 2.0}), r"reputation\.penalty: must be in"),
        (lambda d: d.update(timing={"propose_timeout_ms": 0}), r"timing\.propose_timeout_ms"),
        (lambda d: d.update(fixed_point={"frac_bits": 30}), r"fixed_point\.frac_bits"),
        (lambda d: d.update(members=[]), r"members: must be a non-empty array"),
    ],
)
def test_every_invalid_field_is_named(change, message):
    """Each kind of mistake raises ConfigError naming the field and the problem."""
    data = document()
    change(data)
    with pytest.raises(ConfigError, match=message):
        parse_genesis(data)


def test_unreadable_and_malformed_files(tmp_path):
    """A missing file and broken TOML are ConfigErrors that say so."""
    with pytest.raises(ConfigError, match="cannot read genesis"):
        load_genesis(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("network_id = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_genesis(bad)


@pytest.mark.parametrize("name", sorted(PINNED_FILES))
def test_genesis_hash_is_pinned(name):
    """The canonical encoding of representative genesis files hashes to the recorded values."""
    genesis = parse_genesis(tomllib.loads(PINNED_FILES[name]), name)
    assert genesis.hash.hex() == PINNED_HASHES[name]
    assert parse_genesis(tomllib.loads(dump_genesis(genesis)), name).hash == genesis.hash


# A value other than the default for every genesis parameter (a fragment path), and the tables
# it needs around it. `test_every_parameter_has_a_variant` keeps this list complete.
VARIANTS: dict[str, dict[str, Any]] = {
    "model.kind": ({"model": {"kind": "synthetic", "dimension": 12}}),
    "model.dimension": ({"model": {"kind": "synthetic", "dimension": 13}}),
    "model.seed": ({"model": {"kind": "logistic", "features": 64, "classes": 10, "seed": 7}}),
    "model.features": ({"model": {"kind": "logistic", "features": 30, "classes": 10}}),
    "model.classes": ({"model": {"kind": "logistic", "features": 64, "classes": 3}}),
    "model.hidden": ({"model": {"kind": "mlp", "features": 64, "classes": 10, "hidden": [5, 4]}}),
    "aggregation.rule": ({"aggregation": {"rule": "fedavg"}}),
    "aggregation.<name>": ({"aggregation": {"rule": "trimmed_mean", "trim": 1}}),
    "fixed_point.frac_bits": ({"fixed_point": {"frac_bits": 20}}),
    "reputation.enabled": ({"reputation": {"enabled": False}}),
    "reputation.initial": ({"reputation": {"initial": 0.6}}),
    "reputation.reward": ({"reputation": {"reward": 0.01}}),
    "reputation.penalty": ({"reputation": {"penalty": 0.3}}),
    "reputation.outlier_penalty": ({"reputation": {"outlier_penalty": 0.02}}),
    "reputation.opposing_penalty": ({"reputation": {"opposing_penalty": 0.05}}),
    "reputation.absence_penalty": ({"reputation": {"absence_penalty": 0.02}}),
    "reputation.outlier_ratio": ({"reputation": {"outlier_ratio": 4.5}}),
    "reputation.ban_below": ({"reputation": {"ban_below": 0.25}}),
    "reputation.ban_rounds": ({"reputation": {"ban_rounds": 3}}),
    "reputation.weight_cap": ({"reputation": {"weight_cap": 0.7}}),
    "timing.round_timeout_ms": ({"timing": {"round_timeout_ms": 9_000}}),
    "timing.collect_timeout_ms": ({"timing": {"collect_timeout_ms": 100}}),
    "timing.propose_timeout_ms": ({"timing": {"propose_timeout_ms": 2_500}}),
    "timing.prevote_timeout_ms": ({"timing": {"prevote_timeout_ms": 900}}),
    "timing.precommit_timeout_ms": ({"timing": {"precommit_timeout_ms": 800}}),
    "timing.timeout_delta_ms": ({"timing": {"timeout_delta_ms": 250}}),
    "timing.timeout_cap_ms": ({"timing": {"timeout_cap_ms": 20_000}}),
}


def parameter_paths():
    return [line.split()[0] for line in describe_settings().splitlines()]


def test_every_parameter_has_a_variant():
    """The round-trip test below covers every parameter the schema declares, no more, no fewer."""
    assert sorted(parameter_paths()) == sorted(VARIANTS)


@pytest.mark.parametrize("path", sorted(VARIANTS))
def test_round_trip_of_every_parameter(path):
    """A changed parameter survives parse -> dump -> parse with an equal genesis and hash, and
    changes the hash (every parameter is hashed)."""
    base = parse_genesis(document())
    genesis = parse_genesis(document(**VARIANTS[path]))  # each variant replaces whole tables
    again = parse_genesis(tomllib.loads(dump_genesis(genesis)))
    assert again == genesis and again.hash == genesis.hash
    assert genesis.hash != base.hash


def _wrong_type(kinds):
    return 12345 if str in kinds else "wrong"


SCALARS = [
    (f"{prefix}{spec.table + '.' if spec.table else ''}{spec.key}", spec)
    for cls, prefix in ((Genesis, ""), (ModelSpec, "model."), (LedgerParams, "reputation."), (Timing, "timing."), (Member, "members[2]."))
    for _, spec in settings_of(cls)
    if spec.schema is None and not spec.rest
]


@pytest.mark.parametrize(("path", "spec"), SCALARS, ids=[path for path, _ in SCALARS])
def test_a_wrong_value_names_the_full_field_path(path, spec):
    """A value of the wrong type, and one out of range, are errors that start with the field's path."""
    data = document(count=4)
    keys = path.replace("[2]", ".2").split(".")
    cursor = data
    for key in keys[:-1]:
        cursor = cursor[int(key)] if key.isdigit() else cursor.setdefault(key, {})
    cursor[keys[-1]] = _wrong_type(spec.kinds)
    with pytest.raises(ConfigError, match=re.escape(f"peers.toml: {path}: must be")):
        parse_genesis(data, "peers.toml")
    if spec.high is not None:
        cursor[keys[-1]] = spec.high * 2 + 1
        with pytest.raises(ConfigError, match=re.escape(f"peers.toml: {path}: must be in {spec.low}..{spec.high}, got")):
            parse_genesis(data, "peers.toml")


def test_ledger_parameters_read_as_q16_and_write_back_as_decimals():
    """reputation.opposing_penalty = 0.05 is 3277 in Q16, and is written back as 0.05."""
    genesis = parse_genesis(document(reputation={"opposing_penalty": 0.05, "weight_cap": 0}))
    assert genesis.ledger == LedgerParams(opposing_penalty=3277, weight_cap=1)
    assert "opposing_penalty = 0.05\n" in dump_genesis(genesis)
    with pytest.raises(ConfigError, match=r"^genesis: reputation\.opposing_penalty: must be in 0\.0\.\.1\.0, got 2$"):
        parse_genesis(document(reputation={"opposing_penalty": 2}))


def test_a_rule_without_parameters_takes_its_defaults():
    """Naming only the rule gives its default parameters; naming any parameter gives exactly those."""
    assert parse_genesis(document(aggregation={"rule": "centered_clipping"})).rule_params == default_rule_params("centered_clipping")
    assert parse_genesis(document(aggregation={"rule": "centered_clipping", "tau_scale": 2.0})).rule_params == {"tau_scale": 2.0}
    assert parse_genesis(document(aggregation={"rule": "median"})).rule_params == {}
    assert parse_genesis({key: value for key, value in document().items() if key != "aggregation"}).rule == RULE_DEFAULT


def test_a_fragment_cannot_set_what_the_network_fills_in():
    """network_id and members come from the tool creating the network, never from a fragment."""
    members = parse_genesis(document()).members
    for key in ("network_id", "members"):
        with pytest.raises(ConfigError, match=rf"^f\.toml: genesis\.{key}: is filled in"):
            genesis_from_fragment({key: "x", "model": {"kind": "synthetic", "dimension": 3}}, "n", members, "f.toml", "genesis")


def test_settings_apply_typed_values_along_a_path():
    """PATH=VALUE reads VALUE as TOML (bare words as strings) and merges it into the tables."""
    fragment = apply_settings({"aggregation": {"rule": "median"}}, ["reputation.opposing_penalty=0.05", "aggregation.rule=krum", "aggregation.f=1", "model.hidden=[3, 2]"])
    assert fragment == {"aggregation": {"rule": "krum", "f": 1}, "reputation": {"opposing_penalty": 0.05}, "model": {"hidden": [3, 2]}}
    for bad in ("opposing_penalty", "=1", "a..b=1"):
        with pytest.raises(ConfigError, match="expected PATH=VALUE"):
            apply_settings({}, [bad])
    with pytest.raises(ConfigError, match=r"aggregation\.rule is not a table"):
        apply_settings(fragment, ["aggregation.rule.x=1"])

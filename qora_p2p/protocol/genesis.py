"""The network's genesis: ``peers.toml``, identical on every member.

Theory of operation
-------------------
A genesis fixes everything the members must agree on before the first round: the member list
(name, Ed25519 public key, ``host:port``), the model (kind and shape, hence the update length P, and
the initial-model seed), the fixed-point format, the aggregation rule and its parameters, the
reputation ledger's parameters, the round timing and the protocol limits. Local settings (key file,
listen address, data directory, dataset shard) live elsewhere.

Every parameter is one dataclass field declared with `qora_p2p.schema.setting` (its TOML key,
type, range and unit); parsing, validation, dumping and hashing are generic over those
declarations, so a new parameter is one line here. Loading names the field at fault
(``members[3].public_key: ...``, ``reputation.opposing_penalty: must be in 0.0..1.0, got 2``).
Unknown keys are errors, so a typo never silently falls back to a default.

A **genesis fragment** is a peers.toml without ``network_id`` and ``members``: the ``[genesis]``
table of a scenario, the ``--genesis`` file and the ``--set PATH=VALUE`` options of ``qora-keys``
and ``qora-sim``. `genesis_from_fragment` completes one with the members of a new network and
reads it through the same schema, so every tool accepts the same names and gives the same errors.

The **genesis hash** is SHA-256 over a canonical msgpack encoding of the parsed values (not of the
TOML text, so comments and formatting do not matter); its layout (`HASH_ORDER`) predates the
generic schema and is pinned by tests, since changing it would split every existing network. Every signature's domain includes it: nothing
signed for one network, model or format is valid in another.

Fault tolerance: with ``n`` members, ``f = (n - 1) // 3`` may be Byzantine, and a quorum is
``floor((n + f) / 2) + 1`` members (``2f + 1`` when ``n = 3f + 1``), so any two quorums share an
honest member. Every round's input set holds at least ``n - f`` updates, so the rule must run on
that many inputs; loading checks it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import msgpack

from qora_p2p import aggregation
from qora_p2p.aggregation import RULES, rule_names, to_fixed_params, validate
from qora_p2p.errors import AggregationError
from qora_p2p.fixedpoint import FRAC_BITS_DEFAULT, FRAC_BITS_MAX, FRAC_BITS_MIN
from qora_p2p.identity import Identity, parse_public_key, public_key_hex
from qora_p2p.protocol import ledger as ledger_module
from qora_p2p.protocol.ledger import LedgerParams
from qora_p2p.schema import (
    Codec,
    Table,
    apply_setting,
    canonical,
    check_values,
    dump,
    parse,
    read_toml,
    setting,
    settings_of,
    write_toml,
)

__all__ = [
    "GENESIS_VERSION",
    "RULE_DEFAULT",
    "Genesis",
    "Member",
    "ModelSpec",
    "Timing",
    "apply_settings",
    "default_rule_params",
    "describe_settings",
    "dump_genesis",
    "genesis_document",
    "genesis_fragment",
    "genesis_from_fragment",
    "load_genesis",
    "model_dimension",
    "parse_genesis",
    "placeholder_members",
]

GENESIS_VERSION = 1
GENESIS_BYTES_MAX = 1 << 20  # 1024 members at ~200 bytes each, with room for comments
MEMBERS_MIN = 1
MEMBERS_MAX = aggregation.INPUTS_MAX  # every member's update may be an input of one aggregation
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NETWORK_ID_PATTERN = NAME_PATTERN  # network ids and member names are file names (logs, keys)
DIMENSION_MAX = 2**24  # P: a 64 MiB update is the largest one frame and one store row should carry
MODEL_KINDS = ("logistic", "mlp", "synthetic")
FEATURES_MAX = 1_000_000  # a model input wider than this is a mistake for the bundled models
CLASSES_MAX = 100_000
LAYER_WIDTH_MAX = 100_000
SEED_MAX = 2**63 - 1  # numpy's seeds are 64-bit; msgpack encodes this as a uint64
TIMEOUT_MS_MAX = 3_600_000  # an hour: beyond this a "timeout" is a configuration mistake
RULE_DEFAULT = "centered_clipping"  # measured best against the attack families (README, Scenarios)
# A rule's parameters when the genesis gives none: centered clipping with a radius of one median
# distance around the previous round's aggregate (README, "Exact, deterministic aggregation").
RULE_PARAMS_DEFAULT: dict[str, dict[str, Any]] = {"centered_clipping": {"tau_scale": 1.0, "center": "previous"}}

assert DIMENSION_MAX <= aggregation.DIMENSION_MAX, "the aggregation engine must be proven for every P a genesis allows"
assert MEMBERS_MAX <= ledger_module.MEMBERS_MAX, "the ledger must hold every member a genesis allows"
assert set(RULE_PARAMS_DEFAULT) <= set(RULES) and RULE_DEFAULT in RULES


def _pattern(pattern: re.Pattern[str]) -> Any:
    return lambda text: None if pattern.fullmatch(text) else f"{text!r} must be 1-64 letters, digits, '.', '_' or '-'"


def _one_of(choices: Sequence[str]) -> Any:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}, got {value!r}"


def _known_rule(rule: str) -> str | None:
    return None if rule in rule_names() else f"unknown rule {rule!r}; known: {', '.join(rule_names())}"


def _parse_address(text: str) -> tuple[str, int]:
    host, separator, port_text = text.rpartition(":")
    if not separator or not port_text.isdigit():
        raise ValueError(f"must be host:port, got {text!r}")
    host = host.strip("[]")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in 1..65535, got {port}")
    if not host:
        raise ValueError("host is empty")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host):
            raise ValueError(f"{host!r} is neither an IP address nor a host name") from None
    return host, port


def _address_text(value: tuple[str, int]) -> str:
    host, port = value
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


ADDRESS = Codec(_parse_address, _address_text)
PUBLIC_KEY = Codec(parse_public_key, public_key_hex)
TUPLE = Codec(tuple, list)


@dataclass(frozen=True, slots=True)
class Member:
    name: str = setting(kinds=str, check=_pattern(NAME_PATTERN), unique=True)
    public_key: bytes = setting(kinds=str, codec=PUBLIC_KEY, unique=True, doc="Ed25519, 64 hex characters")
    host: str = setting(key="address", kinds=str, codec=ADDRESS, covers=("port",), unique=True, doc="host:port")
    port: int = 0  # read and written with host, as ``address``

    @property
    def address(self) -> str:
        return _address_text((self.host, self.port))


def model_dimension(features: int, hidden: Sequence[int], classes: int) -> int:
    """P of a dense network: weights and biases of every layer (``fan_in * fan_out + fan_out``)."""
    widths = (features, *hidden, classes)
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in itertools.pairwise(widths))


def _widths(widths: list[Any]) -> str | None:
    if all(isinstance(width, int) and not isinstance(width, bool) and 1 <= width <= LAYER_WIDTH_MAX for width in widths):
        return None
    return "must list positive integer layer widths"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the members train. ``synthetic`` updates (the simulator's) have no data, only a length."""

    kind: str = setting(kinds=str, check=_one_of(MODEL_KINDS), doc="logistic | mlp | synthetic")
    dimension: int = setting(kinds=int, low=1, high=DIMENSION_MAX, doc="P; derived from the layers unless synthetic")
    seed: int = setting(0, kinds=int, low=0, high=SEED_MAX, doc="seed of the initial model")
    features: int = setting(0, kinds=int, low=1, high=FEATURES_MAX, omit_default=True, doc="input width (not synthetic)")
    classes: int = setting(0, kinds=int, low=2, high=CLASSES_MAX, omit_default=True, doc="output width (not synthetic)")
    hidden: tuple[int, ...] = setting((), kinds=list, codec=TUPLE, check=_widths, omit_default=True, doc="mlp hidden widths")

    @classmethod
    def _schema_complete(cls, values: dict[str, Any], table: Table) -> None:
        kind = values.get("kind")
        if kind is None:
            raise table.error("kind", "missing")
        if kind == "synthetic":
            for key in ("features", "classes", "hidden"):
                if key in table:
                    raise table.error(key, "a synthetic model has only a dimension and a seed")
            return
        for key in ("features", "classes"):
            if key not in values:
                raise table.error(key, "missing")
        hidden = values.get("hidden", ())
        if kind == "logistic" and hidden:
            raise table.error("hidden", "logistic regression has no hidden layers")
        if kind == "mlp" and not hidden:
            raise table.error("hidden", "an mlp needs at least one hidden layer")
        dimension = model_dimension(values["features"], hidden, values["classes"])
        declared = values.setdefault("dimension", dimension)
        if declared != dimension:
            raise table.error("dimension", f"{declared} does not match the model, which has {dimension} parameters")
        if dimension > DIMENSION_MAX:
            raise table.error("dimension", f"{dimension} parameters exceed the supported {DIMENSION_MAX}")


def _timeout(default: int, doc: str) -> Any:
    return setting(default, kinds=int, low=1, high=TIMEOUT_MS_MAX, doc=doc)


@dataclass(frozen=True, slots=True)
class Timing:
    """Round timing. Tendermint's timeouts grow by ``timeout_delta_ms`` per view up to the cap."""

    round_timeout_ms: int = _timeout(60_000, "longest a round collects updates before proposing what it has")
    collect_timeout_ms: int = _timeout(500, "proposer's wait for stragglers once it holds n - f updates")
    propose_timeout_ms: int = _timeout(3_000, "Tendermint's initial propose timeout")
    prevote_timeout_ms: int = _timeout(1_000, "initial prevote timeout")
    precommit_timeout_ms: int = _timeout(1_000, "initial precommit timeout")
    timeout_delta_ms: int = _timeout(500, "growth of every timeout per view")
    timeout_cap_ms: int = _timeout(30_000, "largest timeout; at least every initial timeout")

    def __post_init__(self) -> None:
        check_values(self, "timing parameter")

    @classmethod
    def _schema_complete(cls, values: dict[str, Any], table: Table) -> None:
        def value(name: str) -> int:
            return int(values.get(name, _TIMING_DEFAULTS[name]))

        if value("timeout_cap_ms") < max(value("propose_timeout_ms"), value("prevote_timeout_ms"), value("precommit_timeout_ms")):
            raise table.error("timeout_cap_ms", "must be at least every initial timeout")

    def for_view(self, initial_ms: int, view: int) -> int:
        """Tendermint's ``init + view * delta``, capped."""
        return min(self.timeout_cap_ms, initial_ms + view * self.timeout_delta_ms)


_TIMING_DEFAULTS = {item.name: item.default for item, _ in settings_of(Timing)}
assert Timing().timeout_cap_ms >= max(Timing().propose_timeout_ms, Timing().prevote_timeout_ms, Timing().precommit_timeout_ms)


def default_rule_params(rule: str) -> dict[str, Any]:
    """The parameters of ``rule`` when a genesis lists none (the one home of these defaults)."""
    return dict(RULE_PARAMS_DEFAULT.get(rule.removeprefix("nnm+"), {}))


def _rule_params(params: Mapping[str, Any]) -> tuple[str, str] | None:
    if "center" in params and params["center"] != "previous":
        return "center", 'must be "previous" (the previous round\'s aggregate) or absent (zero)'
    return None


def _fixed_params(genesis: Genesis) -> list[list[Any]]:
    return sorted([key, value] for key, value in to_fixed_params(genesis.rule, genesis.rule_params, genesis.frac_bits).items())


# The hashed layout, fixed before the schema existed: frac_bits comes before the rule.
HASH_ORDER = ("network_id", "members", "model", "frac_bits", "rule", "rule_params", "ledger", "timing")


@dataclass(frozen=True)
class Genesis:
    network_id: str = setting(kinds=str, check=_pattern(NETWORK_ID_PATTERN))
    members: tuple[Member, ...] = setting(schema=Member, many=True, low=MEMBERS_MIN, high=MEMBERS_MAX)
    model: ModelSpec = setting(schema=ModelSpec)
    rule: str = setting(table="aggregation", kinds=str, check=_known_rule, doc="the aggregation rule")
    rule_params: Mapping[str, Any] = setting(
        table="aggregation", rest=True, kinds=(int, float, str), check=_rule_params, canonical=_fixed_params, doc="the rule's parameters"
    )
    frac_bits: int = setting(FRAC_BITS_DEFAULT, table="fixed_point", kinds=int, low=FRAC_BITS_MIN, high=FRAC_BITS_MAX, doc="fractional bits F of Q(32-F).F")
    ledger: LedgerParams | None = setting(key="reputation", schema=LedgerParams, toggle="enabled", factory=LedgerParams)
    timing: Timing = setting(schema=Timing, factory=Timing)

    @classmethod
    def _schema_complete(cls, values: dict[str, Any], table: Table) -> None:
        rule = values.setdefault("rule", RULE_DEFAULT)
        if not values.get("rule_params"):
            values["rule_params"] = default_rule_params(rule)

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def faulty(self) -> int:
        """f: the number of Byzantine members the network tolerates."""
        return (self.size - 1) // 3

    @property
    def quorum(self) -> int:
        """Votes that make a certificate; any two quorums share an honest member."""
        return (self.size + self.faulty) // 2 + 1

    @property
    def inputs_min(self) -> int:
        """Updates every round's input set holds at least: n - f."""
        return self.size - self.faulty

    @property
    def weighted(self) -> bool:
        """Whether the rule weighs inputs by reputation."""
        return self.ledger is not None and RULES[self.rule.removeprefix("nnm+")].weighted

    def member_index(self, public_key: bytes) -> int | None:
        for index, member in enumerate(self.members):
            if member.public_key == public_key:
                return index
        return None

    def fixed_rule_params(self) -> dict[str, Any]:
        """The rule parameters `aggregate` takes (fixed point), without ``center = "previous"``."""
        params = to_fixed_params(self.rule, self.rule_params, self.frac_bits)
        params.pop("center", None)
        return params

    @property
    def centered_on_previous(self) -> bool:
        return self.rule_params.get("center") == "previous"

    def canonical(self) -> bytes:
        """The canonical encoding the genesis hash is taken over."""
        return self._canonical

    @cached_property
    def _canonical(self) -> bytes:  # a genesis is immutable, and signing domains ask often
        packed: bytes = msgpack.packb([GENESIS_VERSION, *canonical(self, HASH_ORDER)], use_bin_type=True)
        return packed

    @cached_property
    def hash(self) -> bytes:
        return hashlib.sha256(b"qora-p2p/genesis/v1" + self.canonical()).digest()

    @cached_property
    def text(self) -> str:
        """The TOML text of this genesis (see `dump_genesis`), written once: every member's store
        keeps a copy, and a simulation opens one store per member."""
        header = (
            "# qora-p2p genesis: must be identical on every member. Its canonical hash binds every\n"
            "# signature, so nothing signed for another network, model or format is ever valid here."
        )
        return write_toml(genesis_document(self), header)


assert set(HASH_ORDER) == {item.name for item, _ in settings_of(Genesis)}, "the hash covers every genesis field"


def parse_genesis(document: Mapping[str, Any], origin: str = "genesis", path: str = "") -> Genesis:
    """Validate a parsed TOML document and build the `Genesis`.

    Args:
        path: where the document sits in its file (``genesis`` for a scenario's table).

    Raises:
        ConfigError: naming the field and the problem.
    """
    root = Table(document, path, origin)
    version = root.get("version", int, GENESIS_VERSION)
    if version != GENESIS_VERSION:
        raise root.error("version", f"this qora-p2p reads genesis version {GENESIS_VERSION}, got {version}")
    genesis: Genesis = parse(Genesis, root)
    try:
        validate(genesis.rule, genesis.inputs_min, genesis.model.dimension, weighted=genesis.weighted, **genesis.fixed_rule_params())
    except AggregationError as error:
        raise root.error(
            "aggregation",
            f"{error} (with n = {genesis.size} members, f = {genesis.faulty} may be "
            f"faulty, so a round may hold only n - f = {genesis.inputs_min} updates)",
        ) from error
    return genesis


def load_genesis(path: str | Path) -> Genesis:
    """Read and validate ``peers.toml``.

    Raises:
        ConfigError: unreadable file, TOML syntax, or any invalid field (named).
    """
    return parse_genesis(read_toml(path, "genesis", GENESIS_BYTES_MAX), str(path))


def genesis_document(genesis: Genesis) -> dict[str, Any]:
    """The TOML document of a genesis (`parse_genesis` of it gives an equal genesis)."""
    return {"version": GENESIS_VERSION, **dump(genesis)}


def dump_genesis(genesis: Genesis) -> str:
    """The TOML text of a genesis (loading it back gives an equal genesis and the same hash)."""
    return genesis.text


# ---------------------------------------------------------------------------------- fragments

FILLED_IN = ("network_id", "members")  # what the tool creating a network supplies


def genesis_fragment(genesis: Genesis) -> dict[str, Any]:
    """The fragment of a genesis: its document without the filled-in keys (nor the version)."""
    return {key: value for key, value in dump(genesis).items() if key not in FILLED_IN}


def placeholder_members(count: int) -> tuple[Member, ...]:
    """``count`` members with fixed keys and loopback addresses, to validate a fragment before
    the real keys exist (only their number matters to validation)."""
    return tuple(
        Member(f"node-{index:02d}", Identity.from_seed(index.to_bytes(32, "big")).public_key, "127.0.0.1", 1024 + index) for index in range(count)
    )


def genesis_from_fragment(fragment: Mapping[str, Any], network_id: str, members: Sequence[Member], origin: str = "genesis", path: str = "") -> Genesis:
    """The genesis of ``fragment`` (a peers.toml without ``network_id`` and ``members``) for a
    network of ``members``.

    Raises:
        ConfigError: the fragment sets a filled-in key, or any invalid field (named, under ``path``).
    """
    table = Table(fragment, path, origin)
    for key in FILLED_IN:
        if key in table:
            raise table.error(key, "is filled in by the tool that creates the network; a genesis fragment cannot set it")
    document = {**fragment, "network_id": network_id, "members": [dump(member) for member in members]}
    return parse_genesis(document, origin, path)


def apply_settings(fragment: Mapping[str, Any], settings: Sequence[str], option: str = "--set") -> dict[str, Any]:
    """``fragment`` with every ``PATH=VALUE`` of ``settings`` applied, in order.

    Raises:
        ConfigError: a setting that is not ``PATH=VALUE``.
    """
    result = dict(fragment)
    for text in settings:
        result = apply_setting(result, text, option)
    return result


def describe_settings() -> str:
    """Every genesis parameter a fragment or ``--set`` can give, with its range and default."""
    lines: list[str] = []

    def line(path: str, text: str) -> None:
        lines.append(f"  {path:<32} {text}")

    def walk(cls: Any, prefix: str) -> None:
        for item, spec in settings_of(cls):
            if cls is Genesis and item.name in FILLED_IN:
                continue
            path = prefix + (f"{spec.table}.{spec.key}" if spec.table else spec.key)
            if spec.toggle is not None:
                line(f"{path}.{spec.toggle}", "true | false, default true: false turns the table off")
            if spec.schema is not None:
                walk(spec.schema, path + ".")
                continue
            if spec.rest:
                line(f"{prefix}{spec.table}.<name>", f"number or string: {spec.doc} (when none: {_defaults_text()})")
                continue
            kinds = "number" if spec.kinds == (int, float) else " or ".join("array" if kind is list else kind.__name__ for kind in spec.kinds)
            bounds = f" {spec.low}..{spec.high}" if spec.low is not None and spec.high is not None else ""
            unit = f" ({spec.codec.unit} inside)" if spec.codec is not None and spec.codec.unit else ""
            default = RULE_DEFAULT if item.name == "rule" else item.default
            shown = "" if spec.omit_default or isinstance(default, type(MISSING)) else f", default {spec.codec.dump(default) if spec.codec else default}"
            line(path, f"{kinds}{bounds}{unit}{shown}: {spec.doc}")

    walk(Genesis, "")
    return "\n".join(lines)


def _defaults_text() -> str:
    return "; ".join(f"{rule}: " + ", ".join(f"{key} = {value!r}" for key, value in params.items()) for rule, params in RULE_PARAMS_DEFAULT.items())

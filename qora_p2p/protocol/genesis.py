"""The network's genesis: ``peers.toml``, identical on every member.

Theory of operation
-------------------
A genesis fixes everything the members must agree on before the first round: the member list
(name, Ed25519 public key, ``host:port``), the model (kind and shape, hence the update length P, and
the initial-model seed), the fixed-point format, the aggregation rule and its parameters, the
reputation ledger's parameters, the round timing and the protocol limits. Local settings (key file,
listen address, data directory, dataset shard) live elsewhere.

Loading validates everything and names the field at fault (``members[3].public_key: ...``).
Unknown keys are errors, so a typo never silently falls back to a default.

The **genesis hash** is SHA-256 over a canonical msgpack encoding of the parsed values (not of the
TOML text, so comments and formatting do not matter). Every signature's domain includes it: nothing
signed for one network, model or format is valid in another.

Fault tolerance: with ``n`` members, ``f = (n - 1) // 3`` may be Byzantine, and a quorum is
``floor((n + f) / 2) + 1`` members (``2f + 1`` when ``n = 3f + 1``), so any two quorums share an
honest member. Every round's input set holds at least ``n - f`` updates, so the rule must run on
that many inputs; loading checks it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import msgpack

from qora_p2p.aggregation import RULES, rule_names, to_fixed_params, validate
from qora_p2p.errors import AggregationError, ConfigError, KeyFormatError
from qora_p2p.fixedpoint import FRAC_BITS_DEFAULT, FRAC_BITS_MAX, FRAC_BITS_MIN
from qora_p2p.identity import parse_public_key, public_key_hex
from qora_p2p.protocol.ledger import ONE, LedgerParams

__all__ = [
    "GENESIS_VERSION",
    "Genesis",
    "Member",
    "ModelSpec",
    "Timing",
    "dump_genesis",
    "load_genesis",
    "parse_genesis",
]

GENESIS_VERSION = 1
MEMBERS_MIN = 1
MEMBERS_MAX = 1024  # the aggregation engine's input limit
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NETWORK_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DIMENSION_MAX = 2**24  # 64 MiB updates; the aggregation engine is proven to 2**24
MODEL_KINDS = ("logistic", "mlp", "synthetic")
TIMEOUT_MS_MAX = 3_600_000  # an hour: beyond this a "timeout" is a configuration mistake


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    public_key: bytes
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the members train. ``synthetic`` updates (the simulator's) have no data, only a length."""

    kind: str
    dimension: int
    seed: int = 0
    features: int = 0
    classes: int = 0
    hidden: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Timing:
    """Round timing. Tendermint's timeouts grow by ``timeout_delta_ms`` per view up to the cap."""

    round_timeout_ms: int = 60_000  # longest a round collects updates before proposing what it has
    collect_timeout_ms: int = 500  # proposer's wait for stragglers once it holds n - f updates
    propose_timeout_ms: int = 3_000
    prevote_timeout_ms: int = 1_000
    precommit_timeout_ms: int = 1_000
    timeout_delta_ms: int = 500
    timeout_cap_ms: int = 30_000

    def for_view(self, initial_ms: int, view: int) -> int:
        """Tendermint's ``init + view * delta``, capped."""
        return min(self.timeout_cap_ms, initial_ms + view * self.timeout_delta_ms)


@dataclass(frozen=True)
class Genesis:
    network_id: str
    members: tuple[Member, ...]
    model: ModelSpec
    rule: str
    rule_params: Mapping[str, Any]
    frac_bits: int = FRAC_BITS_DEFAULT
    ledger: LedgerParams | None = field(default_factory=LedgerParams)
    timing: Timing = field(default_factory=Timing)

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
        ledger = None if self.ledger is None else [getattr(self.ledger, item.name) for item in fields(self.ledger)]
        timing = [getattr(self.timing, item.name) for item in fields(self.timing)]
        model = [self.model.kind, self.model.dimension, self.model.seed, self.model.features, self.model.classes, list(self.model.hidden)]
        params = sorted([key, value] for key, value in to_fixed_params(self.rule, self.rule_params, self.frac_bits).items())
        members = [[member.name, member.public_key, member.host, member.port] for member in self.members]
        document = [GENESIS_VERSION, self.network_id, members, model, self.frac_bits, self.rule, params, ledger, timing]
        return msgpack.packb(document, use_bin_type=True)

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(b"qora-p2p/genesis/v1" + self.canonical()).digest()


class _Reader:
    """Typed access to one TOML table with errors naming the full field path."""

    def __init__(self, table: Mapping[str, Any], path: str, origin: str) -> None:
        self.table, self.path, self.origin = table, path, origin
        self.used: set[str] = set()

    def error(self, key: str, problem: str) -> ConfigError:
        where = f"{self.path}.{key}" if self.path else key
        return ConfigError(f"{self.origin}: {where}: {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, low: float | None = None, high: float | None = None) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                raise self.error(key, "missing")
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(item.__name__ for item in kinds)
            raise self.error(key, f"must be {names}, got {type(value).__name__} {value!r}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise self.error(key, "must be finite")
            if (low is not None and value < low) or (high is not None and value > high):
                raise self.error(key, f"must be in {low}..{high}, got {value}")
        return value

    def table_of(self, key: str, required: bool = True) -> _Reader | None:
        self.used.add(key)
        if key not in self.table:
            if required:
                raise self.error(key, "missing table")
            return None
        value = self.table[key]
        if not isinstance(value, dict):
            raise self.error(key, "must be a table")
        return _Reader(value, f"{self.path}.{key}" if self.path else key, self.origin)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown field")


def _parse_address(reader: _Reader, text: str) -> tuple[str, int]:
    host, separator, port_text = text.rpartition(":")
    if not separator or not port_text.isdigit():
        raise reader.error("address", f"must be host:port, got {text!r}")
    host = host.strip("[]")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise reader.error("address", f"port must be in 1..65535, got {port}")
    if not host:
        raise reader.error("address", "host is empty")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host):
            raise reader.error("address", f"{host!r} is neither an IP address nor a host name") from None
    return host, port


def _members(root: _Reader) -> tuple[Member, ...]:
    root.used.add("members")
    entries = root.table.get("members")
    if not isinstance(entries, list) or not entries:
        raise root.error("members", "must be a non-empty array of [[members]] tables")
    if not MEMBERS_MIN <= len(entries) <= MEMBERS_MAX:
        raise root.error("members", f"must list {MEMBERS_MIN}..{MEMBERS_MAX} members, got {len(entries)}")
    members = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise root.error(f"members[{index}]", "must be a table")
        reader = _Reader(entry, f"members[{index}]", root.origin)
        name = reader.get("name", str)
        if not NAME_PATTERN.fullmatch(name):
            raise reader.error("name", f"{name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        try:
            public_key = parse_public_key(reader.get("public_key", str))
        except KeyFormatError as error:
            raise reader.error("public_key", str(error)) from error
        host, port = _parse_address(reader, reader.get("address", str))
        reader.finish()
        members.append(Member(name, public_key, host, port))
    for what, key in (("name", lambda m: m.name), ("public_key", lambda m: m.public_key), ("address", lambda m: (m.host, m.port))):
        seen: dict[Any, int] = {}
        for index, member in enumerate(members):
            value = key(member)
            if value in seen:
                raise root.error(f"members[{index}].{what}", f"duplicates members[{seen[value]}]")
            seen[value] = index
    return tuple(members)


def _model(root: _Reader) -> ModelSpec:
    reader = root.table_of("model")
    assert reader is not None
    kind = reader.get("kind", str)
    if kind not in MODEL_KINDS:
        raise reader.error("kind", f"must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    seed = reader.get("seed", int, 0, low=0, high=2**63 - 1)
    if kind == "synthetic":
        dimension = reader.get("dimension", int, low=1, high=DIMENSION_MAX)
        reader.finish()
        return ModelSpec(kind, dimension, seed)
    features = reader.get("features", int, low=1, high=1_000_000)
    classes = reader.get("classes", int, low=2, high=100_000)
    hidden_raw = reader.get("hidden", list, [])
    if kind == "logistic" and hidden_raw:
        raise reader.error("hidden", "logistic regression has no hidden layers")
    if not all(isinstance(width, int) and not isinstance(width, bool) and 1 <= width <= 100_000 for width in hidden_raw):
        raise reader.error("hidden", "must list positive integer layer widths")
    hidden = tuple(hidden_raw) if kind == "mlp" else ()
    if kind == "mlp" and not hidden:
        raise reader.error("hidden", "an mlp needs at least one hidden layer")
    widths = (features, *hidden, classes)
    dimension = sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(widths[:-1], widths[1:]))
    declared = reader.get("dimension", int, dimension)
    if declared != dimension:
        raise reader.error("dimension", f"{declared} does not match the model, which has {dimension} parameters")
    if dimension > DIMENSION_MAX:
        raise reader.error("dimension", f"{dimension} parameters exceed the supported {DIMENSION_MAX}")
    reader.finish()
    return ModelSpec(kind, dimension, seed, features, classes, hidden)


def _aggregation(root: _Reader) -> tuple[str, dict[str, Any]]:
    reader = root.table_of("aggregation")
    assert reader is not None
    rule = reader.get("rule", str)
    if rule not in rule_names():
        raise reader.error("rule", f"unknown rule {rule!r}; known: {', '.join(rule_names())}")
    params = {}
    for key, value in reader.table.items():
        if key == "rule":
            continue
        reader.used.add(key)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise reader.error(key, f"must be a number or a string, got {type(value).__name__}")
        params[key] = value
    if "center" in params and params["center"] != "previous":
        raise reader.error("center", "must be \"previous\" (the previous round's aggregate) or absent (zero)")
    return rule, params


def _fraction(reader: _Reader, key: str, default: int) -> int:
    value = reader.get(key, (int, float), default / ONE, low=0.0, high=1.0)
    return round(value * ONE)


def _ledger(root: _Reader) -> LedgerParams | None:
    reader = root.table_of("reputation", required=False)
    if reader is None:
        return LedgerParams()
    defaults = LedgerParams()
    if not reader.get("enabled", bool, True):
        reader.used.update(reader.table)
        return None
    params = LedgerParams(
        initial=_fraction(reader, "initial", defaults.initial),
        reward=_fraction(reader, "reward", defaults.reward),
        penalty=_fraction(reader, "penalty", defaults.penalty),
        opposing_penalty=_fraction(reader, "opposing_penalty", defaults.opposing_penalty),
        absence_penalty=_fraction(reader, "absence_penalty", defaults.absence_penalty),
        outlier_ratio=round(reader.get("outlier_ratio", (int, float), defaults.outlier_ratio / ONE, low=1.0, high=1024.0) * ONE),
        ban_below=_fraction(reader, "ban_below", defaults.ban_below),
        ban_rounds=reader.get("ban_rounds", int, defaults.ban_rounds, low=1, high=10**9),
        weight_cap=max(1, _fraction(reader, "weight_cap", defaults.weight_cap)),
    )
    reader.finish()
    return params


def _timing(root: _Reader) -> Timing:
    reader = root.table_of("timing", required=False)
    if reader is None:
        return Timing()
    values = {item.name: reader.get(item.name, int, item.default, low=1, high=TIMEOUT_MS_MAX) for item in fields(Timing)}
    reader.finish()
    timing = Timing(**values)
    if timing.timeout_cap_ms < max(timing.propose_timeout_ms, timing.prevote_timeout_ms, timing.precommit_timeout_ms):
        raise reader.error("timeout_cap_ms", "must be at least every initial timeout")
    return timing


def parse_genesis(document: Mapping[str, Any], origin: str = "genesis") -> Genesis:
    """Validate a parsed TOML document and build the `Genesis`.

    Raises:
        ConfigError: naming the field and the problem.
    """
    root = _Reader(document, "", origin)
    version = root.get("version", int, GENESIS_VERSION)
    if version != GENESIS_VERSION:
        raise root.error("version", f"this qora-p2p reads genesis version {GENESIS_VERSION}, got {version}")
    network_id = root.get("network_id", str)
    if not NETWORK_ID_PATTERN.fullmatch(network_id):
        raise root.error("network_id", f"{network_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
    members = _members(root)
    model = _model(root)
    fixed = root.table_of("fixed_point", required=False)
    frac_bits = FRAC_BITS_DEFAULT
    if fixed is not None:
        frac_bits = fixed.get("frac_bits", int, FRAC_BITS_DEFAULT, low=FRAC_BITS_MIN, high=FRAC_BITS_MAX)
        fixed.finish()
    rule, params = _aggregation(root)
    ledger = _ledger(root)
    timing = _timing(root)
    root.finish()
    genesis = Genesis(network_id, members, model, rule, params, frac_bits, ledger, timing)
    try:
        validate(rule, genesis.inputs_min, model.dimension, weighted=genesis.weighted, **genesis.fixed_rule_params())
    except AggregationError as error:
        raise ConfigError(
            f"{origin}: aggregation: {error} (with n = {genesis.size} members, f = {genesis.faulty} may be "
            f"faulty, so a round may hold only n - f = {genesis.inputs_min} updates)"
        ) from error
    return genesis


def read_toml(path: str | Path, what: str, bytes_max: int) -> dict[str, Any]:
    """A small TOML file's document (profiles, scenarios).

    Raises:
        ConfigError: unreadable, larger than ``bytes_max``, not UTF-8 or not TOML; the message
            says ``what`` the file was meant to be.
    """
    source = Path(path)
    try:
        data = source.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {what} {source}: {error.strerror or error}") from error
    if len(data) > bytes_max:
        raise ConfigError(f"{what} {source} is larger than {bytes_max} bytes")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{what} {source} is not valid TOML: {error}") from error


def load_genesis(path: str | Path) -> Genesis:
    """Read and validate ``peers.toml``.

    Raises:
        ConfigError: unreadable file, TOML syntax, or any invalid field (named).
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read genesis {source}: {error.strerror or error}") from error
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML: {error}") from error
    return parse_genesis(document, str(source))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _q16_text(value: int) -> str:
    """The shortest decimal that reads back as the same Q16 integer (0.05 rather than 0.05000305)."""
    for digits in range(1, 12):
        text = f"{value / ONE:.{digits}f}"
        if round(float(text) * ONE) == value:
            return text
    return repr(value / ONE)


def dump_genesis(genesis: Genesis) -> str:
    """The TOML text of a genesis (loading it back gives an equal genesis and the same hash)."""
    lines = [
        "# qora-p2p genesis: must be identical on every member. Its canonical hash binds every",
        "# signature, so nothing signed for another network, model or format is ever valid here.",
        f"version = {GENESIS_VERSION}",
        f"network_id = {_toml_value(genesis.network_id)}",
        "",
        "[model]",
        f"kind = {_toml_value(genesis.model.kind)}",
    ]
    if genesis.model.kind != "synthetic":
        lines += [f"features = {genesis.model.features}", f"classes = {genesis.model.classes}"]
        if genesis.model.hidden:
            lines.append(f"hidden = {_toml_value(list(genesis.model.hidden))}")
    lines += [f"dimension = {genesis.model.dimension}", f"seed = {genesis.model.seed}", ""]
    lines += ["[fixed_point]", f"frac_bits = {genesis.frac_bits}", ""]
    lines += ["[aggregation]", f"rule = {_toml_value(genesis.rule)}"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in sorted(genesis.rule_params.items())]
    lines.append("")
    if genesis.ledger is None:
        lines += ["[reputation]", "enabled = false", ""]
    else:
        ledger = genesis.ledger
        lines += [
            "[reputation]",
            "enabled = true",
            f"initial = {_q16_text(ledger.initial)}",
            f"reward = {_q16_text(ledger.reward)}",
            f"penalty = {_q16_text(ledger.penalty)}",
            f"opposing_penalty = {_q16_text(ledger.opposing_penalty)}",
            f"absence_penalty = {_q16_text(ledger.absence_penalty)}",
            f"outlier_ratio = {_q16_text(ledger.outlier_ratio)}",
            f"ban_below = {_q16_text(ledger.ban_below)}",
            f"ban_rounds = {ledger.ban_rounds}",
            f"weight_cap = {_q16_text(ledger.weight_cap)}",
            "",
        ]
    lines.append("[timing]")
    lines += [f"{item.name} = {getattr(genesis.timing, item.name)}" for item in fields(Timing)]
    lines.append("")
    for member in genesis.members:
        lines += [
            "[[members]]",
            f"name = {_toml_value(member.name)}",
            f"public_key = {_toml_value(public_key_hex(member.public_key))}",
            f"address = {_toml_value(member.address)}",
            "",
        ]
    return "\n".join(lines)

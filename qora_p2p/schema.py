"""Configuration schemas: TOML tables read into frozen dataclasses, one declared field at a time.

Theory of operation
-------------------
A configuration dataclass declares each field with `setting`: its TOML key, the TOML types it
accepts, its range, a `Codec` between the file's unit and the program's (`q16`: a fraction in the
file, an integer count of 2**-16 in the program), and an optional check. From those declarations
alone, `parse` reads a table into the dataclass, `dump` writes it back as TOML values, and
`canonical` lists the values a hash is taken over. A dataclass may add one hook,
``_schema_complete(values, table)``, for relations between its fields (a derived model dimension,
a timeout cap above every initial timeout).

`Table` is the one reader of TOML tables in the project (genesis, scenario and profile files):
typed access, unknown keys refused, and every error a `ConfigError` in one format that names the
file and the full field path::

    peers.toml: reputation.opposing_penalty: must be in 0.0..1.0, got 2

`read_toml` reads a bounded file; `write_toml` writes nested dictionaries back; `apply_setting` turns
``PATH=VALUE`` (the ``--set`` option of the command-line tools) into a document change.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from qora_p2p.errors import ConfigError

__all__ = [
    "Codec",
    "Setting",
    "Table",
    "apply_setting",
    "canonical",
    "check_values",
    "dump",
    "flatten",
    "merge",
    "parse",
    "read_toml",
    "setting",
    "settings_of",
    "write_toml",
]

SCHEMA = "qora_p2p.schema"  # the key of a field's `Setting` in its dataclass metadata
SETTING_TEXT_MAX = 4096  # one --set option; longer is a mistake, not a configuration


@dataclass(frozen=True, slots=True)
class Codec:
    """A conversion between a file's value (after its type and range checks) and a field's."""

    parse: Callable[[Any], Any]
    dump: Callable[[Any], Any]
    unit: str = ""  # for documentation: "Q16" says the program holds 2**-16 units


@dataclass(frozen=True, slots=True)
class Setting:
    """How one dataclass field is spelled, checked and converted in a TOML file."""

    key: str = ""  # the field's name unless given
    kinds: tuple[type, ...] = ()
    low: float | None = None
    high: float | None = None
    codec: Codec | None = None
    check: Callable[[Any], str | None] | None = None  # the problem with a file value, or None
    table: str | None = None  # the sub-table that holds the key (``fixed_point`` for frac_bits)
    schema: type | None = None  # a nested table, read into this dataclass
    many: bool = False  # an array of such tables (``[[members]]``), low..high of them
    toggle: str | None = None  # in a nested table, ``toggle = false`` makes the field None
    rest: bool = False  # a free mapping: every key of ``table`` that no other field claims
    covers: tuple[str, ...] = ()  # further fields this key sets (``address``: host and port)
    unique: bool = False  # distinct across the tables of an array
    omit_default: bool = False  # `dump` leaves the key out while the field holds its default
    canonical: Callable[[Any], Any] | None = None  # the hashed value, from the whole instance
    doc: str = ""


def setting(default: Any = MISSING, *, factory: Callable[[], Any] | None = None, **spec: Any) -> Any:
    """A dataclass field carrying its `Setting` (keyword arguments as `Setting`'s)."""
    kinds = spec.pop("kinds", ())
    spec["kinds"] = kinds if isinstance(kinds, tuple) else (kinds,)
    metadata = {SCHEMA: Setting(**spec)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def settings_of(cls: Any) -> Iterator[tuple[Field[Any], Setting]]:
    """The fields of a schema dataclass that have a `Setting`, in declaration order."""
    for item in fields(cls):
        spec = item.metadata.get(SCHEMA)
        if spec is not None:
            yield item, spec if spec.key else replace(spec, key=item.name)


def check_values(instance: Any, what: str) -> None:
    """Check a schema dataclass built in code (not parsed): every numeric field holds an integer
    or number in its range, converted to the program's unit (a Q16 field in 0..65536).

    Raises:
        ConfigError: naming the field, its range in the program's unit, and the value.
    """
    for item, spec in settings_of(type(instance)):
        if spec.low is None or spec.high is None or spec.schema is not None:
            continue
        value = getattr(instance, item.name)
        convert = spec.codec.parse if spec.codec is not None else (lambda bound: bound)
        low, high = convert(spec.low), convert(spec.high)
        kinds = (int,) if spec.codec is not None or spec.kinds == (int,) else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
            unit = f" ({spec.codec.unit}, {spec.low}..{spec.high} in a file)" if spec.codec is not None and spec.codec.unit else ""
            raise ConfigError(f"{what} {spec.key!r} must be in {low}..{high}{unit}, got {value!r}")


def _default(item: Field[Any]) -> Any:
    if item.default is not MISSING:
        return item.default
    if item.default_factory is not MISSING:
        return item.default_factory()
    return MISSING


# ------------------------------------------------------------------------------------- reading


def _kind_names(kinds: tuple[type, ...]) -> str:
    return " or ".join("table" if kind is dict else "array" if kind is list else kind.__name__ for kind in kinds)


class Table:
    """Typed access to one TOML table; errors name ``origin`` and the full path of the field."""

    def __init__(self, table: Mapping[str, Any], path: str = "", origin: str = "") -> None:
        self.table, self.path, self.origin = table, path, origin
        self.used: set[str] = set()
        self.known: set[str] = set()  # keys a schema reads here, named when a key is unknown

    def where(self, key: str) -> str:
        if key.startswith("["):
            return f"{self.path}{key}"
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, problem: str) -> ConfigError:
        where = self.where(key) if key else self.path
        return ConfigError(f"{self.origin}: {where}: {problem}" if self.origin else f"{where}: {problem}")

    def __contains__(self, key: str) -> bool:
        return key in self.table

    def get(self, key: str, kinds: type | tuple[type, ...], default: Any = ..., *, low: float | None = None, high: float | None = None) -> Any:
        """The value at ``key``, of one of ``kinds`` and within ``low..high``, or ``default``.

        Raises:
            ConfigError: missing (without a default), of another type, not finite or out of range.
        """
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                raise self.error(key, "missing")
            return default
        value = self.table[key]
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise self.error(key, f"must be {_kind_names(kinds)}, got {type(value).__name__} {value!r}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise self.error(key, "must be finite")
            if (low is not None and value < low) or (high is not None and value > high):
                raise self.error(key, f"must be in {low}..{high}, got {value}")
        return value

    def table_of(self, key: str, required: bool = True) -> Table | None:
        """The sub-table at ``key`` (None when absent and not required)."""
        self.used.add(key)
        if key not in self.table:
            if required:
                raise self.error(key, "missing table")
            return None
        value = self.table[key]
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table, got {type(value).__name__}")
        return Table(value, self.where(key), self.origin)

    def tables(self, key: str, low: int = 0, high: int | None = None) -> list[Table]:
        """The array of tables at ``key`` (``[[key]]``), ``low..high`` of them; absent is empty."""
        self.used.add(key)
        entries = self.table.get(key, [])
        if not isinstance(entries, list) or (low and not entries):
            raise self.error(key, f"must be a{' non-empty' if low else 'n'} array of [[{key}]] tables")
        if not low <= len(entries) <= (high if high is not None else len(entries)):
            raise self.error(key, f"must list {low}..{high} tables, got {len(entries)}")
        readers = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise self.error(f"{key}[{index}]", "must be a table")
            readers.append(Table(entry, f"{self.where(key)}[{index}]", self.origin))
        return readers

    def unused(self) -> list[str]:
        return sorted(set(self.table) - self.used)

    def finish(self) -> None:
        """Refuse every key nothing read: a typo never falls back to a default silently."""
        unknown = self.unused()
        if unknown:
            known = ", ".join(sorted(self.used | self.known)) or "none"
            raise self.error(unknown[0], f"unknown key {unknown[0]!r} (known: {known})")

    def only(self, *keys: str) -> None:
        """Refuse every key but ``keys`` (for tables read piecemeal)."""
        self.used.update(keys)
        unknown = sorted(set(self.table) - set(keys))
        if unknown:
            raise self.error(unknown[0], f"unknown key {unknown[0]!r} (known: {', '.join(keys)})")


def read_toml(path: str | Path, what: str, bytes_max: int) -> dict[str, Any]:
    """A small TOML file's document.

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


# --------------------------------------------------------------------------- the generic schema


def parse(cls: Any, table: Table) -> Any:  # noqa: PLR0912 (one branch per kind of setting)
    """Read ``table`` into the schema dataclass ``cls``; every unknown key is an error.

    Raises:
        ConfigError: naming the field's full path and the problem.
    """
    values: dict[str, Any] = {}
    holders: dict[str | None, Table] = {None: table}
    rests: list[tuple[Field[Any], Setting, Table]] = []
    for item, spec in settings_of(cls):
        if spec.table not in holders:
            assert spec.table is not None
            holders[spec.table] = table.table_of(spec.table, required=False) or Table({}, table.where(spec.table), table.origin)
        holder = holders[spec.table]
        holder.known.update((spec.key, *([spec.toggle] if spec.toggle and spec.schema is None else [])))
        if spec.rest:
            rests.append((item, spec, holder))
        elif spec.schema is not None:
            _parse_nested(values, item, spec, holder)
        elif spec.key in holder:
            raw = holder.get(spec.key, spec.kinds, low=spec.low, high=spec.high)
            problem = spec.check(raw) if spec.check is not None else None
            if problem:
                raise holder.error(spec.key, problem)
            try:
                value = spec.codec.parse(raw) if spec.codec is not None else raw
            except ValueError as error:
                raise holder.error(spec.key, str(error)) from error
            for name, part in zip((item.name, *spec.covers), value if spec.covers else (value,), strict=True):
                values[name] = part
    for item, spec, holder in rests:
        extra = {key: holder.table[key] for key in holder.unused()}
        holder.used.update(extra)
        for key, value in extra.items():
            if isinstance(value, bool) or not isinstance(value, spec.kinds):
                raise holder.error(key, f"must be {_kind_names(spec.kinds)}, got {type(value).__name__} {value!r}")
        problem = spec.check(extra) if spec.check is not None else None
        if problem:
            raise holder.error(*problem)
        values[item.name] = extra
    complete = getattr(cls, "_schema_complete", None)
    if complete is not None:
        complete(values, table)
    for item, spec in settings_of(cls):
        if item.name not in values and _default(item) is MISSING:
            raise holders[spec.table].error(spec.key, "missing")
    for holder in holders.values():
        holder.finish()
    return cls(**values)


def _parse_nested(values: dict[str, Any], item: Field[Any], spec: Setting, holder: Table) -> None:
    if spec.many:
        readers = holder.tables(spec.key, int(spec.low or 0), None if spec.high is None else int(spec.high))
        entries = tuple(parse(spec.schema, reader) for reader in readers)
        _check_unique(spec, entries, holder)
        values[item.name] = entries
        return
    sub = holder.table_of(spec.key, required=_default(item) is MISSING)
    if sub is None:
        return
    if spec.toggle is None:
        values[item.name] = parse(spec.schema, sub)
        return
    enabled = sub.get(spec.toggle, bool, True)
    rest = Table({key: value for key, value in sub.table.items() if key != spec.toggle}, sub.path, sub.origin)
    rest.known.add(spec.toggle)
    value = parse(spec.schema, rest)  # disabled or not, every other key must be valid
    values[item.name] = value if enabled else None


def _check_unique(spec: Setting, entries: tuple[Any, ...], holder: Table) -> None:
    for item, inner in settings_of(spec.schema):
        if not inner.unique:
            continue
        seen: dict[Any, int] = {}
        for index, entry in enumerate(entries):
            value = tuple(getattr(entry, name) for name in (item.name, *inner.covers))
            if value in seen:
                raise holder.error(f"{spec.key}[{index}].{inner.key}", f"duplicates {spec.key}[{seen[value]}]")
            seen[value] = index


def dump(instance: Any) -> dict[str, Any]:
    """The TOML document of a schema dataclass: `parse` of it gives an equal instance."""
    document: dict[str, Any] = {}
    for item, spec in settings_of(type(instance)):
        holder = document if spec.table is None else document.setdefault(spec.table, {})
        value = getattr(instance, item.name)
        if spec.rest:
            holder.update(sorted(value.items()))
        elif spec.omit_default and value == _default(item):
            continue
        elif spec.schema is not None and spec.many:
            holder[spec.key] = [dump(entry) for entry in value]
        elif spec.schema is not None and spec.toggle is not None:
            holder[spec.key] = {spec.toggle: False} if value is None else {spec.toggle: True, **dump(value)}
        elif spec.schema is not None:
            holder[spec.key] = dump(value)
        else:
            if spec.covers:
                value = (value, *(getattr(instance, name) for name in spec.covers))
            holder[spec.key] = spec.codec.dump(value) if spec.codec is not None else value
    return document


def canonical(instance: Any, order: tuple[str, ...] | None = None) -> list[Any]:
    """The values a hash covers: every field in declaration order (or ``order``), nested
    dataclasses as lists, tuples as lists, None as nil; a `Setting.canonical` replaces a value."""
    specs = {item.name: spec for item, spec in settings_of(type(instance))}
    names = order or tuple(item.name for item in fields(instance))
    result = []
    for name in names:
        spec = specs.get(name)
        result.append(spec.canonical(instance) if spec is not None and spec.canonical is not None else _canonical_value(getattr(instance, name)))
    return result


def _canonical_value(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return canonical(value)
    if isinstance(value, tuple | list):
        return [_canonical_value(item) for item in value]
    return value


# ------------------------------------------------------------------------------------- writing


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


def write_toml(document: Mapping[str, Any], header: str = "", prefix: str = "") -> str:
    """TOML text of nested dictionaries: scalars, then tables, then arrays of tables."""
    lines = [header] if header else []
    lines += [f"{key} = {_toml_value(value)}" for key, value in document.items() if not isinstance(value, dict) and not _is_tables(value)]
    for key, value in document.items():
        if isinstance(value, dict):
            lines += ["", f"[{prefix}{key}]", write_toml(value, prefix=f"{prefix}{key}.")]
    for key, value in document.items():
        if _is_tables(value):
            for entry in value:
                lines += ["", f"[[{prefix}{key}]]", write_toml(entry, prefix=f"{prefix}{key}.")]
    return "\n".join(line for line in lines if line is not None).replace("\n\n\n", "\n\n").strip("\n") + "\n"


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


# ------------------------------------------------------------------------------ merging, --set


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``: tables merge key by key, any other value replaces."""
    result = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


def flatten(document: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``PATH=VALUE`` for every value of a document of tables (`apply_setting` inverts it)."""
    result = []
    for key, value in document.items():
        if isinstance(value, dict):
            result += flatten(value, f"{prefix}{key}.")
        else:
            result.append(f"{prefix}{key}={_toml_value(value)}")
    return result


def apply_setting(document: Mapping[str, Any], text: str, option: str = "--set") -> dict[str, Any]:
    """``document`` with ``PATH=VALUE`` applied: ``reputation.opposing_penalty=0.05``.

    VALUE is read as a TOML value (``0.05``, ``true``, ``[16, 8]``, ``"median"``); anything that is
    not one is taken as a string, so ``aggregation.rule=median`` works unquoted. The schema that
    reads the document checks the path and the value.

    Raises:
        ConfigError: not ``PATH=VALUE``, or a path through a key that is not a table.
    """
    path, separator, raw = text.partition("=")
    keys = path.strip().split(".")
    if not separator or len(text) > SETTING_TEXT_MAX or not all(key.strip() and key.replace("_", "").replace("-", "").isalnum() for key in keys):
        raise ConfigError(f"{option}: expected PATH=VALUE such as reputation.opposing_penalty=0.05, got {text[:80]!r}")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    change: Any = value
    for key in reversed(keys):
        change = {key.strip(): change}
    cursor: Any = document
    for depth, key in enumerate(keys[:-1]):
        cursor = cursor.get(key.strip()) if isinstance(cursor, Mapping) else None
        if cursor is not None and not isinstance(cursor, Mapping):
            raise ConfigError(f"{option} {path}: {'.'.join(keys[: depth + 1])} is not a table")
    return merge(document, change)

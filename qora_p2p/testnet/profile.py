"""Node profiles: a member's local workload and (on test networks) its Byzantine behaviour.

A profile is a small TOML file (``nodes/*.toml`` ships one per behaviour)::

    description = "sign flip: sends minus its honest update"
    attack = "sign_flip"            # a learning attack (qora_p2p.learning.attacks), or "none"
    behaviour = "none"              # a protocol misbehaviour (qora_p2p.protocol.behaviour), or "none"
    colluders = 3                   # attackers an attack assumes (ALIE's z)
    view_wait_ms = 2000             # how long a forging attack waits for others' updates
    dataset = "digits"              # local data: bundled name or .npz path
    partition = "dirichlet"         # iid | dirichlet | shards, with alpha and data_seed
    alpha = 0.5
    data_seed = 0

    [attack_params]                 # the attack's parameters
    scale = 1.0

    [training]                      # local SGD (defaults of qora_p2p.learning.training)
    steps = 10
    learning_rate = 0.1

Every key is optional; unknown keys are errors that name the key. Command-line flags override
the profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from qora_p2p.errors import ConfigError, LearningError
from qora_p2p.learning.attacks import ATTACKS
from qora_p2p.learning.training import TrainingConfig
from qora_p2p.node.workload import WorkloadConfig
from qora_p2p.protocol.behaviour import PROTOCOL_BEHAVIOURS
from qora_p2p.schema import Table, read_toml

__all__ = ["Profile", "load_profile", "parse_profile"]

PROFILE_BYTES_MAX = 64 << 10  # a profile is a few lines
_TOP: dict[str, type | tuple[type, ...]] = {"description": str, "attack": str, "behaviour": str, "colluders": int, "view_wait_ms": int, "dataset": str, "partition": str, "alpha": (int, float), "data_seed": int}
_TRAINING = {item.name: item.type for item in fields(TrainingConfig)}


@dataclass(frozen=True)
class Profile:
    description: str = "honest member"
    behaviour: str | None = None
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)

    @property
    def byzantine(self) -> bool:
        return self.behaviour is not None or self.workload.attack != "none"


def parse_profile(document: Mapping[str, Any], origin: str = "profile") -> Profile:
    """Validate a parsed profile document.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, an unknown attack or behaviour;
            the message names the file and the key (``nodes/x.toml: training.steps: ...``).
    """
    root = Table(document, "", origin)
    top = {key: root.get(key, kinds) for key, kinds in _TOP.items() if key in root}
    attack = top.pop("attack", "none")
    if attack != "none" and attack not in ATTACKS:
        raise root.error("attack", f"no attack {attack!r}; known: none, {', '.join(ATTACKS)}")
    behaviour = top.pop("behaviour", "none")
    if behaviour != "none" and behaviour not in PROTOCOL_BEHAVIOURS:
        raise root.error("behaviour", f"no behaviour {behaviour!r}; known: none, {', '.join(PROTOCOL_BEHAVIOURS)}")
    description = top.pop("description", "honest member" if attack == behaviour == "none" else f"{attack}/{behaviour}")
    attack_table = root.table_of("attack_params", required=False)
    attack_params = dict(attack_table.table) if attack_table is not None else {}
    training_table = root.table_of("training", required=False) or Table({}, "training", origin)
    training_values = {key: training_table.get(key, (int, float)) for key in _TRAINING if key in training_table}
    training_table.finish()
    root.used.update(_TOP)
    root.finish()
    try:
        training = TrainingConfig(**training_values)
        if "alpha" in top:
            top["alpha"] = float(top["alpha"])
        workload = WorkloadConfig(training=training, attack=attack, attack_params=attack_params, **top)
        from qora_p2p.learning.attacks import build_attack  # noqa: PLC0415

        build_attack(attack, **attack_params)
    except (LearningError, TypeError) as error:
        raise ConfigError(f"{origin}: {error}") from error
    return Profile(description, None if behaviour == "none" else behaviour, workload)


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile file.

    Raises:
        ConfigError: missing, too large, not TOML, or invalid (the message names the key).
    """
    source = Path(path)
    document = read_toml(source, "profile", PROFILE_BYTES_MAX)
    return parse_profile(document, str(source))


def with_overrides(profile: Profile, **changes: Any) -> Profile:
    """The profile with workload fields replaced (None values are left alone)."""
    workload_changes = {key: value for key, value in changes.items() if value is not None and key != "training"}
    training_changes = {key: value for key, value in (changes.get("training") or {}).items() if value is not None}
    try:
        training = replace(profile.workload.training, **training_changes)
        return replace(profile, workload=replace(profile.workload, training=training, **workload_changes))
    except LearningError as error:
        raise ConfigError(str(error)) from error

"""The package stack holds: every module imports only its own layer and the layers below it
(cli > testnet > sim > node > learning > protocol > base), so node/ never reaches into testnet/,
protocol/ never into learning/, and nothing imports the CLI."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "qora_p2p"
STACK = ("base", "protocol", "learning", "node", "sim", "testnet", "cli")  # bottom to top
BASE_MODULES = {"errors", "fixedpoint", "identity", "aggregation", "schema"}


def layer_of(module: str) -> str:
    """The layer of a ``qora_p2p.x...`` module name."""
    first = module.split(".")[1] if "." in module else ""
    if first in BASE_MODULES or first in ("", "__init__"):
        return "base"
    assert first in STACK, f"{module} is in no layer; add it to the stack"
    return first


def project_imports(path: Path) -> list[str]:
    """Every ``qora_p2p`` module ``path`` imports, anywhere in it, annotations-only ones included."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names if alias.name.startswith("qora_p2p.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("qora_p2p"):
            names += [f"{node.module}.{alias.name}" if node.module == "qora_p2p" else node.module for alias in node.names]
    return names


MODULES = sorted(path for path in PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    """No module outside the stack (a new top-level package must be placed in it)."""
    for path in MODULES:
        layer_of("qora_p2p." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.relative_to(PACKAGE).as_posix())
def test_imports_point_down_the_stack(path):
    """A module's project imports are all of its own layer or a lower one."""
    own = layer_of("qora_p2p." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    upward = [name for name in project_imports(path) if STACK.index(layer_of(name)) > STACK.index(own)]
    assert not upward, f"{own} module imports higher layers: {upward}"

"""The protocol package is sans-IO: it never imports a clock, a socket, a database, threads, an
event loop, or a layer above it (node, sim, testnet, learning, cli)."""

import ast
import subprocess
import sys
from pathlib import Path

import qora_p2p.protocol

PROTOCOL = Path(qora_p2p.protocol.__file__).parent
FORBIDDEN_ROOTS = {"trio", "socket", "sqlite3", "time", "asyncio", "threading", "random", "os", "subprocess", "structlog"}
FORBIDDEN_LAYERS = ("qora_p2p.node", "qora_p2p.sim", "qora_p2p.testnet", "qora_p2p.learning", "qora_p2p.cli")


def imported_names(path: Path) -> list[str]:
    """Modules imported anywhere in ``path`` except under ``if TYPE_CHECKING:`` (annotations only)."""
    tree = ast.parse(path.read_text(), str(path))
    names = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            pending += node.orelse
            continue
        pending += ast.iter_child_nodes(node)
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_no_protocol_module_imports_io_or_a_higher_layer():
    """Every import statement in protocol/ (module level or inside a function) is checked; the
    randomness a behaviour uses is passed in, so `random` appears only for annotations."""
    offences = []
    for path in sorted(PROTOCOL.glob("*.py")):
        for name in imported_names(path):
            if name.split(".")[0] in FORBIDDEN_ROOTS or name.startswith(FORBIDDEN_LAYERS):
                offences.append(f"{path.name} imports {name}")
    assert not offences, offences


def test_importing_the_protocol_loads_no_io_module_beyond_its_dependencies():
    """In a fresh interpreter, after numpy, msgpack and PyNaCl are loaded, importing every protocol
    module adds none of trio, socket, sqlite3, time (nor a higher layer of the project)."""
    modules = sorted(f"qora_p2p.protocol.{path.stem}" for path in PROTOCOL.glob("*.py") if path.stem != "__init__")
    program = (
        "import sys, numpy, msgpack, nacl.bindings, nacl.signing\n"
        "before = set(sys.modules)\n"
        + "".join(f"import {module}\n" for module in modules)
        + "added = set(sys.modules) - before\n"
        "watched = {'trio', 'socket', 'sqlite3', 'time', 'asyncio', 'structlog'}\n"
        f"layers = {FORBIDDEN_LAYERS!r}\n"
        "print(sorted(m for m in added if m in watched or m.startswith(layers)))\n"
    )
    output = subprocess.run(  # noqa: S603 (our own interpreter, our own program)
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]", output

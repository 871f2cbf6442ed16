"""The package's shape: its import layers (import-linter), no import cycle (grimp), small functions (ruff).

docs/architecture.md explains the layers; setup.cfg holds the import contracts and ruff.toml the
size rules, so ``lint-imports`` and ``ruff check`` give the same verdicts outside the tests.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    """A console script installed beside this Python (the test extra installs them)."""
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; install the test extra: pip install -e '.[test]'")
    return found


def test_import_contracts_hold():
    result = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_import_cycle_inside_apkit():
    graph = grimp.build_graph("apkit")
    cycles = [
        (module, imported, graph.find_shortest_chain(importer=imported, imported=module))
        for module in sorted(graph.modules)
        for imported in sorted(graph.find_modules_directly_imported_by(module))
        if graph.chain_exists(importer=imported, imported=module)
    ]
    assert cycles == []


def test_functions_stay_small():
    result = subprocess.run([_tool("ruff"), "check", "apkit", "--select", "C901,PLR0915", "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

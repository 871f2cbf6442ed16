"""The package's shape: its import layers (import-linter), no import cycle (grimp), small functions (ruff and
radon), and tests that mirror the modules.

docs/architecture.md explains the layers; setup.cfg holds the import contracts and ruff.toml the
size rules, so ``lint-imports``, ``ruff check apkit`` and ``radon cc apkit -n D`` give the same verdicts
outside the tests.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_RADON_COMPLEXITY = 15
MIRRORED_SHARE = 0.70  # of apkit's modules with a tests/<package>/test_<module>.py


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
    # ruff.toml: complexity 10, 50 statements, 10 arguments, 4 positional arguments.
    result = subprocess.run([_tool("ruff"), "check", "apkit", "--select", "C901,PLR0913,PLR0915,PLR0917",
                             "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_function_has_a_radon_complexity_above_15():
    # Radon also counts boolean operators and comprehensions, so it is a second, coarser view of ruff's C901.
    result = subprocess.run([_tool("radon"), "cc", "apkit", "--json"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    blocks = json.loads(result.stdout)
    complex_ = [f"{path}:{block['lineno']} {block['name']} ({block['complexity']})"
                for path, found in blocks.items() for block in found if block["complexity"] > MAX_RADON_COMPLEXITY]
    assert complex_ == []


def _mirrored(module: Path) -> Path:
    """``apkit/pkg/_name.py`` -> ``tests/pkg/test_name.py``."""
    relative = module.relative_to(ROOT / "apkit")
    return ROOT / "tests" / relative.parent / f"test_{relative.name.lstrip('_')}"


def test_most_modules_have_a_mirrored_test_file():
    modules = [p for p in (ROOT / "apkit").rglob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    missing = sorted(str(m.relative_to(ROOT)) for m in modules if not _mirrored(m).is_file())
    share = 1 - len(missing) / len(modules)
    assert share >= MIRRORED_SHARE, f"{share:.0%} of the modules have a mirrored test file; missing: {missing}"

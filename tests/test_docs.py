"""The documentation stays true: the CLI reference matches `apkit <cmd> --help`, and the Python code runs."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ("index.md", "install.md", "quickstart.md", "cli.md", "api.md", "reproduction.md", "performance.md")


def load_generator():
    spec = importlib.util.spec_from_file_location("make_cli_reference", DOCS / "make_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def python_blocks(page: str) -> list[str]:
    """The fenced code blocks of ``page`` that are marked ``python``."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.setdefault("OMP_NUM_THREADS", "1")  # small models: one thread avoids oversubscribing a busy machine
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_every_page_exists_with_a_title():
    for page in PAGES:
        text = (DOCS / page).read_text(encoding="utf-8")
        assert text.startswith("# "), f"docs/{page} must open with a '# ' title"
    # The reproduction page states the paper's sizes that the test suite checks exactly.
    reproduction = (DOCS / "reproduction.md").read_text(encoding="utf-8")
    assert all(n in reproduction for n in ("15,224,916", "294,364", "3,269,153", "0.9719"))


def test_relative_links_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)\)", (DOCS / page).read_text(encoding="utf-8")):
            assert (DOCS / target).exists(), f"docs/{page} links to a missing file: {target}"


def test_cli_reference_is_up_to_date():
    generator = load_generator()
    current = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert current == generator.render(), "docs/cli.md is out of date: run python docs/make_cli_reference.py"


def test_cli_reference_documents_every_command_and_option():
    from apkit.cli import cli

    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name, command in cli.commands.items():
        assert f"## apkit {name}\n" in page
        for param in command.params:
            for flag in param.opts:
                assert flag in page, f"apkit {name} {flag} is missing from docs/cli.md"


def test_cli_reference_check_mode(tmp_path, monkeypatch):
    generator = load_generator()
    monkeypatch.setattr(generator, "PAGE", tmp_path / "cli.md")
    assert generator.main(["--check"]) == 1  # no page yet
    assert generator.main([]) == 0
    assert generator.main(["--check"]) == 0
    (tmp_path / "cli.md").write_text("stale\n", encoding="utf-8")
    assert generator.main(["--check"]) == 1


def test_quickstart_python_runs(tmp_path):
    blocks = python_blocks("quickstart.md")
    assert blocks, "docs/quickstart.md has no python block"
    proc = run_python("\n".join(blocks), tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the audit table: the teacher and both students, each with both methods
    for model in ("teacher", "none", "swa"):
        for method in ("gradcam", "lrp"):
            assert f"| {model} | {method} |" in proc.stdout


@pytest.mark.parametrize("page", ["api.md"])
def test_api_page_python_runs(page, tmp_path):
    blocks = python_blocks(page)
    assert len(blocks) >= 8, f"docs/{page} should show each main entry point"
    proc = run_python("\n".join(blocks), tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]

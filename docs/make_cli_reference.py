"""Write docs/cli.md, the command-line reference, from the output of ``apkit <command> --help``.

Run it after changing a command's options::

    python docs/make_cli_reference.py          # rewrites docs/cli.md
    python docs/make_cli_reference.py --check  # exit 1 if docs/cli.md is out of date

The help text is rendered at a fixed width, so the page does not depend on the terminal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from click.testing import CliRunner

from apkit.cli import cli

PAGE = Path(__file__).resolve().parent / "cli.md"
WIDTH = 100

HEADER = """\
# Command-line reference

`apkit` is a thin command line over the Python API: each command parses its options, calls one
API function and writes its output.  An invalid input ends with a one-line `apkit: error: ...`
message and exit code 1.  `apkit audit --fail-under NAME=VALUE` is a release gate: when the
pessimistic end of an interval crosses a threshold, the audit still writes its report, prints one
`apkit: gate ... failed ...` line per failed gate and exits with code 3 (see `apkit audit` below).

This page is generated from `apkit <command> --help` by `docs/make_cli_reference.py`; do not
edit it by hand.
"""


def help_text(args: list[str]) -> str:
    """The output of ``apkit ARGS --help``, rendered ``WIDTH`` columns wide."""
    result = CliRunner().invoke(cli, [*args, "--help"], prog_name="apkit", terminal_width=WIDTH)
    if result.exit_code != 0:
        raise RuntimeError(f"apkit {' '.join(args)} --help failed:\n{result.output}")
    return result.output.rstrip() + "\n"


def render() -> str:
    """The whole page: the group's help, then one section per command in alphabetical order."""
    parts = [HEADER, "## apkit\n", "```text\n" + help_text([]) + "```\n"]
    for name in sorted(cli.list_commands(None)):
        parts += [f"## apkit {name}\n", "```text\n" + help_text([name]) + "```\n"]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if docs/cli.md is out of date")
    options = parser.parse_args(argv)
    page = render()
    if options.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if current != page:
            print(f"{PAGE} is out of date: run python docs/make_cli_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

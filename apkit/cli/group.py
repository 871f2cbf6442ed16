"""The ``apkit`` click group, the console entry point, and the option helpers every command shares."""

from __future__ import annotations

import sys

import click

from apkit.core.errors import ApkitError, ValidationError
from apkit.core.names import MODEL_SPEC_HELP
from apkit.core.version import __version__

DEVICE_HELP = "cpu, cuda, cuda:N or auto."
SPEC_HELP = MODEL_SPEC_HELP + "."


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="apkit")
def cli() -> None:
    """Audit and compress vision models so that they keep explaining their predictions.

    Start with `apkit bench` (the whole story on the embedded synthetic data), `apkit list`
    (what is available) or `apkit COMMAND --help`.
    """


def comma_list(value: str, option: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; an empty list is refused."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise ValidationError(f"{option} must name at least one item, comma-separated, got {value!r}")
    return items


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning apkit errors into one-line messages."""
    try:
        cli.main(args=argv, prog_name="apkit", standalone_mode=False)
    except ApkitError as exc:
        click.echo(f"apkit: error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("apkit: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)

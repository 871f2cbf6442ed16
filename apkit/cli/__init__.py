"""The ``apkit`` command line: a thin click layer over the API.

Each command lives in its own module and parses options, calls one API function and writes
its output.  An :class:`apkit.errors.ApkitError` becomes a one-line message and exit code 1.
"""

from __future__ import annotations

import sys

import click

from apkit import __version__
from apkit.errors import ApkitError, ValidationError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="apkit")
def cli() -> None:
    """Audit and compress vision models so that they keep explaining their predictions.

    Start with `apkit bench` (the whole story on the embedded synthetic data), `apkit list`
    (what is available) or `apkit COMMAND --help`.
    """


def teacher_data_options(teacher, data_spec: str) -> dict:
    """Dataset options that follow a loaded teacher: synthetic images are rendered at its input size."""
    input_size = teacher.apkit_config.get("options", {}).get("input_size")
    return {"image_size": input_size} if data_spec == "synthetic" and input_size is not None else {}


def check_teacher_classes(teacher, dataset) -> None:
    """Refuse a teacher whose class count is not the dataset's."""
    if teacher.apkit_config["num_classes"] != dataset.num_classes:
        raise ValidationError(
            f"the teacher has {teacher.apkit_config['num_classes']} classes but the data has "
            f"{dataset.num_classes}; use a teacher trained on this dataset"
        )


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


# Commands register themselves on `cli` when their module is imported.
from apkit.cli import (  # noqa: E402,F401
    audit,
    bench,
    compress,
    list_cmd,
    train,  # noqa: E402,F401
)

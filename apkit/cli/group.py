"""The ``apkit`` click group, the console entry point, and the option helpers every command shares."""

from __future__ import annotations

import sys

import click

from apkit.core.errors import ApkitError, ValidationError
from apkit.core.names import MODEL_SPEC_HELP
from apkit.core.version import __version__

DEVICE_HELP = "cpu, cuda, cuda:N or auto."
SPEC_HELP = (MODEL_SPEC_HELP + ". A package.module:factory spec imports that module and calls the factory: it runs "
             "that code, so name only code you trust; the factory must return a torch.nn.Module.")


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


#: Options that do not change what a run computes: left out of the settings its folder records.
RUN_ONLY = ("device", "num_workers", "quiet", "resume", "overwrite", "out_dir")

OVERWRITE_HELP = ("Write over what --out holds (another run, other settings or inputs, an interrupted run); "
                  "without it such a folder is refused.")


def spec_identity(spec: str) -> str:
    """What identifies a model spec's input: its architecture and the SHA-256 of its weights file.

    The path itself is left out: the same weights moved elsewhere are the same input.
    """
    from apkit.core.runs import file_identity
    from apkit.models.resolve import parse_model_spec

    try:
        parsed = parse_model_spec(spec)
    except ApkitError:  # a malformed spec is refused with its own error once the run starts
        return str(spec)
    return f"{parsed.arch or 'checkpoint'}={file_identity(parsed.path)}"


def run_folder_of(kind: str, options: dict, *, inputs: dict, resumable: tuple[str, ...] = ()):
    """The checked folder of a command's run (see :mod:`apkit.core.runs`), recorded for the ``with`` block.

    ``options`` are the command's options: those of :data:`RUN_ONLY` and the ``inputs`` are left
    out of the recorded settings.
    """
    from apkit.core.runs import run_folder

    settings = {k: v for k, v in options.items() if k not in RUN_ONLY and k not in inputs}
    return run_folder(options["out_dir"], kind, settings=settings, inputs=inputs,
                      resume=bool(options.get("resume")), overwrite=bool(options.get("overwrite")),
                      resumable=resumable)


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

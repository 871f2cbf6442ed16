"""The click group and the console entry point: comma lists, exit codes and one-line errors."""

import click
import pytest
from helpers import run_cli

from apkit.cli.group import cli, comma_list
from apkit.core.errors import DataError, ValidationError
from apkit.core.version import __version__


def test_comma_list():
    assert comma_list("a, b,c", "--methods") == ["a", "b", "c"]
    assert comma_list(" gradcam ,", "--methods") == ["gradcam"]  # empty items are dropped
    with pytest.raises(ValidationError, match="--methods must name at least one item, comma-separated, got ' , '"):
        comma_list(" , ", "--methods")


@pytest.fixture
def failing_command():
    """A temporary ``apkit fail KIND`` that raises what KIND names."""
    @cli.command("fail")
    @click.argument("kind")
    def fail(kind):
        if kind == "apkit":
            raise DataError("the data root is missing; pass --data synthetic")
        if kind == "abort":
            raise click.exceptions.Abort()
        raise click.UsageError("bad usage")

    yield
    cli.commands.pop("fail")


def test_an_apkit_error_is_one_line_and_exit_code_1(failing_command, capsys):
    code, out, err = run_cli(["fail", "apkit"], capsys)
    assert code == 1 and out == ""
    assert err == "apkit: error: the data root is missing; pass --data synthetic\n"


def test_usage_errors_abort_and_version(failing_command, capsys):
    code, _, err = run_cli(["fail", "usage"], capsys)
    assert code == 2 and "Error: bad usage" in err and "Traceback" not in err
    code, _, err = run_cli(["no-such-command"], capsys)
    assert code == 2 and "No such command 'no-such-command'" in err
    code, _, err = run_cli(["fail", "abort"], capsys)
    assert code == 130 and err == "apkit: aborted\n"
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"apkit, version {__version__}"

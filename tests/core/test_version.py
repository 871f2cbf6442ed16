"""The version is written once: the installed package's metadata reads it from apkit.core.version."""

from importlib.metadata import version

import apkit
from apkit.core.version import __version__


def test_the_installed_metadata_and_the_package_give_one_version():
    assert version("apkit") == __version__ == apkit.__version__


def test_the_cli_prints_the_version(capsys):
    from helpers import run_cli

    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"apkit, version {__version__}"

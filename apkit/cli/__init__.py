"""The ``apkit`` command line: a thin click layer over the API.

Each command lives in its own module; it parses its options, calls one API function, and prints
or writes the result.  An :class:`apkit.core.errors.ApkitError` becomes a one-line message and exit
code 1.  At import time the commands read only the torch-free :mod:`apkit.core.names` (their choices
and defaults); each imports the API when it runs, so that ``apkit --help`` answers at once.
"""

from apkit.cli import audit, bench, compress, list_cmd, train  # noqa: F401  (each registers its command)
from apkit.cli.group import cli, main

__all__ = ["cli", "main"]

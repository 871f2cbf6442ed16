"""One error hierarchy for everything apkit raises on bad input.

Every error says what is wrong and how to fix it.  The CLI turns an ``ApkitError`` into a
one-line message and exit code 1.
"""


class ApkitError(Exception):
    """Base class of every error apkit raises deliberately."""


class ValidationError(ApkitError, ValueError):
    """An argument has the wrong type, shape, range or value."""


class UnknownNameError(ApkitError, KeyError):
    """A name (model, dataset, method, layer, ...) is not known; the message lists the known ones."""

    def __str__(self):  # KeyError would quote the message; show it as written
        return str(self.args[0]) if self.args else ""


class DataError(ApkitError, ValueError):
    """A dataset root is missing, incomplete or malformed."""


class CheckpointError(ApkitError, ValueError):
    """A checkpoint is corrupt, unsafe, or does not fit the requested model."""

"""The DTBError hierarchy: errors meant for people, one line each."""

import contextlib
import warnings


class DTBError(Exception):
    """Base class of every error dtb raises on purpose.

    The CLI prints ``str(err)`` on one line and exits with status 2.
    """


class ConfigError(DTBError):
    """A run configuration key is unknown, mistyped or out of range."""


class DataError(DTBError):
    """An input data file (connectome, run file) is missing, malformed or inconsistent."""


class ResourceError(DTBError):
    """A run needs more memory, devices or ranks than it has, or an output exists."""


class WriteError(ResourceError):
    """A write to a run file or its parts failed (a full disk, a quota, an I/O error): the run stops."""


class LauncherError(ResourceError):
    """The MPI launcher's variables in the environment are none a launcher of this MPI would set: every
    process that meets it says so (no rank can be trusted to be rank 0)."""


class UsageError(DTBError, TypeError):
    """The Python API was called wrongly: a method out of order, an argument of the wrong kind."""


@contextlib.contextmanager
def deferred_warnings():
    """Warnings raised inside, given only when it ends without an error: a bad input gets its one error line, not
    the warnings found on the way to it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()
    for w in caught:
        key = (str(w.message), w.category, w.filename, w.lineno)
        if key not in seen:  # shown once per place, as Python's default filter would
            seen.add(key)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

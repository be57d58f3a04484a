"""Exceptions raised by moepack.

Every error carries the library's message unchanged: the text the CLI prints
after ``moepack: error:``, naming the file, tensor, layer or expert at fault.

    Error                   base class (a RuntimeError)
    InvalidArgumentError    bad arguments, rule files, requests (also a ValueError)
    CorruptCheckpointError  malformed or inconsistent checkpoint (also a ValueError)
    FileError               the operating system refused a read or write (also an OSError)
    MismatchError           verification found a difference
    NotFoundError           something named does not exist (also a LookupError)
"""


class Error(RuntimeError):
    """Base class of every moepack error. ``code`` names the kind."""

    code = "error"


class InvalidArgumentError(Error, ValueError):
    code = "invalid_argument"


class CorruptCheckpointError(Error, ValueError):
    code = "corrupt"


class FileError(Error, OSError):
    code = "io"


class MismatchError(Error):
    code = "mismatch"


class NotFoundError(Error, LookupError):
    code = "not_found"


_BY_CODE = {c.code: c for c in (InvalidArgumentError, CorruptCheckpointError, FileError, MismatchError, NotFoundError)}


def _from_code(code, message):
    """Called by the C++ module: the exception for a library Status."""
    return _BY_CODE.get(code, Error)(message)

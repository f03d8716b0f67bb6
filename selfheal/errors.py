"""Exception messages as a person should read them, for the CLI and the service alike."""

from __future__ import annotations


def error_text(error: BaseException) -> str:
    """An exception's message without Python's decoration: a KeyError's ``str`` is the repr of its message
    (quoted, so ``"no incident 'INC-1'"`` grows a second pair), an OSError's names its errno."""
    if isinstance(error, KeyError) and len(error.args) == 1:
        return str(error.args[0])
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return str(error)

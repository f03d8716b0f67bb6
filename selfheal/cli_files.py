"""What the commands that read and write files share: output paths checked before the work, and error
messages without Python's decoration.

An output path is checked *before* a command does its work (scoring logs rows, so a bad ``--out`` found
afterwards would leave the decisions written nowhere and the rows already marked as scored).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

FRAME_FORMATS = (".parquet", ".csv", ".jsonl", ".ndjson")


class OutputPathError(ValueError):
    """An output path that cannot be written: why, in words for a person."""


def check_output_path(path: Path, formats: Collection[str] = FRAME_FORMATS) -> None:
    """Refuse an output path that the command could not write, before any work is done.

    Raises:
        OutputPathError: the format is not one of ``formats``, the path is a directory, or its folder
            cannot be created or written to.
    """
    suffix = path.suffix.lower()
    if path.is_dir():
        raise OutputPathError(f"{path} is a directory: give a file name ({', '.join(formats)})")
    if suffix not in formats:
        raise OutputPathError(f"unsupported output format {suffix or '(none)'!r} for {path}: use {', '.join(formats)}")
    folder = path.parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise OutputPathError(f"cannot create the folder of {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputPathError(f"cannot write {path}: permission denied")


def error_text(error: BaseException) -> str:
    """An exception's message as a person should read it (a KeyError's ``str`` is its quoted repr)."""
    if isinstance(error, KeyError) and len(error.args) == 1:
        return str(error.args[0])
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return str(error)

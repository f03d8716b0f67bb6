"""What the commands that write files share: output paths checked before the work, and the writers.

An output path is checked *before* a command does its work (scoring logs rows, so a bad ``--out`` found
afterwards would leave the decisions written nowhere and the rows already marked as scored).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports this module at start; pandas loads when a frame is written
    import pandas as pd

# Output formats of a frame, by suffix.
FRAME_WRITERS: dict[str, Callable[[pd.DataFrame, Path], object]] = {
    ".parquet": lambda frame, path: frame.to_parquet(path, index=False),
    ".csv": lambda frame, path: frame.to_csv(path, index=False),
    ".jsonl": lambda frame, path: frame.to_json(path, orient="records", lines=True, date_format="iso"),
}
FRAME_WRITERS[".ndjson"] = FRAME_WRITERS[".jsonl"]
FRAME_FORMATS = tuple(FRAME_WRITERS)


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


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    """Write a frame in the format its suffix names (`check_output_path` refused the others beforehand)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    FRAME_WRITERS[path.suffix.lower()](frame, path)

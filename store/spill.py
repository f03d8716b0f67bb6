"""Log chunks set aside in ``log-spill/``: the file format, and loading them back, each file once.

`LogWriter` sets a chunk aside when it has failed `MAX_WRITE_ATTEMPTS` writes (a value the database
cannot hold, or a disk that stays full), and `LogWriter.close` sets aside whatever it could not write.
Each file is JSON lines, one logged row per line: ``{"table": "predictions", "row": {...}}``, ASCII only
(``\\ud800`` and the like survive as escapes), timestamps as ISO text, NaN as ``NaN``.

`load_spilled` loads the files into their tables once the cause is gone (space freed, a value fixed by
hand): a file's rows and its record in ``loaded_log_spills`` (its sha256) commit in one transaction, so a
crash or a second run never loads a file twice; a loaded file moves to ``log-spill/loaded/``. A file that
still fails stays where it is, with the error reported; the other files load.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from store.db import Store

SPILL_FOLDER = "log-spill"
LOADED_FOLDER = "loaded"


def spill_folder(store: Store) -> Path:
    """Where `store`'s set-aside chunks go: ``log-spill/`` beside the database file."""
    return store.path.parent / SPILL_FOLDER


def write_spill_file(path: Path, rows: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """Write ``(table, row)`` pairs as JSON lines (ASCII, so any Python text fits), all or nothing.

    The lines go to ``<path>.part``, synced, then renamed: a disk that fills up half-way (the very case
    this is for) or a kill leaves no half file for `load_spilled` to load, or to fail on, forever.
    """
    part = path.with_name(path.name + ".part")
    try:
        with part.open("w", encoding="ascii") as handle:
            for table, row in rows:
                handle.write(json.dumps({"table": table, "row": row}, default=_plain) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _plain(value: Any) -> Any:
    """A JSON-able form of what log rows hold besides str/int/float/None."""
    if value is pd.NaT or (isinstance(value, np.datetime64) and np.isnat(value)):
        return None
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value).isoformat(sep=" ")
    if isinstance(value, datetime | date):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


@dataclass(frozen=True)
class SpillLoad:
    """What became of one spill file."""

    path: Path
    status: Literal["loaded", "already loaded", "failed"]
    rows: dict[str, int]  # table -> rows in the file
    error: str | None = None


def spill_load_json(load: SpillLoad) -> dict[str, Any]:
    """What became of a spill file, as the CLI and the API print it."""
    return {"file": load.path.name, "status": load.status, "rows": load.rows, "error": load.error}


def spill_files(store: Store) -> list[Path]:
    """The spill files not loaded yet, oldest first."""
    folder = spill_folder(store)
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name))


def load_spilled(store: Store, paths: Iterable[Path] | None = None) -> list[SpillLoad]:
    """Load spill files (default: every one in the folder) into their tables; see the module docstring."""
    return [_load_one(store, path) for path in (spill_files(store) if paths is None else paths)]


def _load_one(store: Store, path: Path) -> SpillLoad:
    content = path.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    try:
        tables = _rows_by_table(content.decode("ascii"), path)
    except (UnicodeDecodeError, ValueError) as error:
        return SpillLoad(path, "failed", {}, f"not a spill file: {error}")
    counts = {table: len(rows) for table, rows in tables.items()}
    if store.scalar("SELECT count(*) FROM loaded_log_spills WHERE sha256 = ?", [digest]):
        _move_loaded(path)
        return SpillLoad(path, "already loaded", counts)
    try:
        with store.transaction():
            for table, rows in tables.items():
                store.append(table, pd.DataFrame.from_records(rows))
            store.execute(
                "INSERT INTO loaded_log_spills VALUES (?, ?, ?, now())", [digest, path.name, sum(counts.values())]
            )
    except Exception as error:  # the cause is still there (or a new one): keep the file, say why
        return SpillLoad(path, "failed", counts, f"{error} ({type(error).__name__})")
    _move_loaded(path)
    return SpillLoad(path, "loaded", counts)


def _rows_by_table(text: str, path: Path) -> dict[str, list[dict[str, Any]]]:
    tables: dict[str, list[dict[str, Any]]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        entry = json.loads(line)
        if not isinstance(entry, dict) or not isinstance(entry.get("table"), str) or not isinstance(entry.get("row"), dict):
            raise ValueError(f"{path.name} line {number} is not {{'table': ..., 'row': {{...}}}}")
        row = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in entry["row"].items()}
        tables.setdefault(entry["table"], []).append(row)
    return tables


def _move_loaded(path: Path) -> None:
    done = path.parent / LOADED_FOLDER
    done.mkdir(exist_ok=True)
    shutil.move(str(path), str(done / path.name))

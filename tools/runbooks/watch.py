"""Re-reading a runbook folder that changed, so a long-running service acts on the runbooks as they are now.

`selfheal serve` loaded its runbooks once, at start. A person who edited one (``set_threshold: human``)
saw the edit on the web page and in ``/v1/runbooks``, which read the folder on every request, while the
service's responder went on applying the action without asking until someone restarted the service.
`RunbookFolderWatch.check` notices a change (file names, sizes and modification times: a few ``stat``
calls) and reads the folder again; the service calls it before each thing its responder does.

A folder whose new version does not load changes nothing: the last library that loaded stays in force
(an edit half-saved must not leave the responder without runbooks), and `check` returns the error so the
caller can say so. The next change is read again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tools.runbooks.library import RunbookLibrary, default_runbooks_dir
from tools.runbooks.linter import runbook_files
from tools.runbooks.model import RunbookError

Fingerprint = tuple[tuple[str, int, int], ...]


def folder_fingerprint(folder: Path) -> Fingerprint:
    """(name, modification time in ns, size) of every runbook file in ``folder``; (-1, -1) for one that
    cannot be read. Any edit, new file or removal changes it."""
    entries: list[tuple[str, int, int]] = []
    for path in runbook_files([folder]) if folder.is_dir() else []:
        try:
            stat = path.stat()
        except OSError:
            entries.append((path.name, -1, -1))
            continue
        entries.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(entries)


@dataclass
class RunbookFolderWatch:
    """Watches the folder a library was loaded from (see the module docstring)."""

    folder: Path
    seen: Fingerprint

    @classmethod
    def start(cls, folder: Path | None) -> RunbookFolderWatch:
        """Watch ``folder`` (default: `default_runbooks_dir`) as it is now: the library just loaded from it."""
        where = folder or default_runbooks_dir()
        return cls(where, folder_fingerprint(where))

    def check(self) -> RunbookLibrary | RunbookError | None:
        """The folder's library when it changed since the last look; the error when its new version does
        not load; None when nothing changed."""
        now = folder_fingerprint(self.folder)
        if now == self.seen:
            return None
        self.seen = now
        try:
            return RunbookLibrary.load(self.folder)
        except RunbookError as error:
            return error

"""Where a selfheal installation keeps its state: one folder, by default ``./.selfheal``.

``SELFHEAL_HOME`` overrides the location. The folder holds the one DuckDB file (owned by one process, see
DESIGN 4), the model artifacts, reports, and DuckDB's extension directory (kept inside the workspace so
nothing is ever downloaded into a user-wide location).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from store.errors import WorkspaceNotFound

HOME_ENV = "SELFHEAL_HOME"
DEFAULT_HOME = ".selfheal"


@dataclass(frozen=True)
class Workspace:
    """Paths inside one workspace folder."""

    home: Path

    def __post_init__(self) -> None:
        # Absolute, so paths recorded in the workspace (reports, artifacts) hold from any working directory.
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())  # accept str too

    @classmethod
    def from_env(cls, home: str | Path | None = None) -> Workspace:
        """The workspace named by ``home``, else ``$SELFHEAL_HOME``, else ``./.selfheal``."""
        chosen = home if home is not None else os.environ.get(HOME_ENV, DEFAULT_HOME)
        return cls(Path(chosen))

    @property
    def db_path(self) -> Path:
        return self.home / "selfheal.duckdb"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def extensions_dir(self) -> Path:
        return self.home / "duckdb_extensions"

    def exists(self) -> bool:
        """Whether a workspace was created here (its database file exists)."""
        return self.db_path.is_file()

    def require(self) -> Workspace:
        """Self, if a workspace exists here; else `WorkspaceNotFound` naming the folder and how to make one."""
        if not self.exists():
            where = "nothing" if not self.home.exists() else "no selfheal.duckdb"
            raise WorkspaceNotFound(
                f"no workspace at {self.home} ({where} there). Name one with --home or SELFHEAL_HOME; "
                "`selfheal train` or `selfheal score` creates one, and `make demo` fills .selfheal-demo"
            )
        return self

    def ensure(self) -> Workspace:
        """Create the folders (idempotent) and return self."""
        for path in (self.home, self.models_dir, self.reports_dir, self.extensions_dir):
            path.mkdir(parents=True, exist_ok=True)
        return self

"""Package attributes loaded on first use (PEP 562), for packages whose import must stay light.

`store`, `tools` and `agent.llm` re-export names from modules that pull in DuckDB, pandas, the monitor or
the OpenAI client. Importing the package itself must not: ``selfheal --help`` and the commands that only
read the record would pay seconds for libraries they never use (`tests/test_cli_startup.py`). Each such
package lists where its names live and sets ``__getattr__ = lazy_attributes(__name__, homes, globals())``;
its ``TYPE_CHECKING`` block keeps the real names visible to type checkers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, homes: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``name`` from ``homes[name]`` on first use.

    Args:
        package: The package's ``__name__`` (for the error message).
        homes: Attribute name -> the module that defines it.
        namespace: The package's ``globals()``: a loaded name is stored there, so later lookups skip this.
    """

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value
        return value

    return __getattr__

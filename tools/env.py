"""Settings from environment variables, the one way every config model of the project reads them."""

from __future__ import annotations

import os
from collections.abc import Mapping


def env_values(env_vars: Mapping[str, str], env: Mapping[str, str] | None = None) -> dict[str, object]:
    """``{field: value}`` for each ``field -> VARIABLE`` of ``env_vars`` whose variable is set and not blank.

    Reads `os.environ` unless ``env`` is given. A blank variable (``export X=``) counts as unset.
    """
    source = os.environ if env is None else env
    return {field: source[var] for field, var in env_vars.items() if source.get(var, "").strip()}

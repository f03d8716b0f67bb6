"""`selfheal --help` and the light commands start without loading the heavy libraries.

Every command used to pay ~7 s at start (measured: importing `selfheal.cli` loaded LangGraph, the
OpenAI client, SciPy through the monitor, XGBoost and scikit-learn) before doing anything, `--help`
included. The heavy modules now load inside the commands that use them; this test pins that down by
what a fresh interpreter has imported (no timing: the machines are shared and noisy).
"""

from __future__ import annotations

import json
import subprocess
import sys

# What a command loads only when it needs it (the scorer, the store, the responder, the LLM client).
HEAVY = ("langgraph", "langchain_core", "openai", "xgboost", "sklearn", "scipy", "duckdb", "pandas", "pyarrow")


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_importing_the_cli_loads_none_of_the_heavy_libraries() -> None:
    loaded = _loaded_after("import selfheal.cli")

    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_help_runs_without_them_and_a_command_still_gets_what_it_needs() -> None:
    help_run = _loaded_after(
        "from typer.testing import CliRunner\nfrom selfheal.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\nassert result.exit_code == 0, result.output"
    )
    assert not help_run & set(HEAVY), sorted(help_run & set(HEAVY))

    # A real command imports its libraries when it runs (here the store and the scorer's validation).
    listed = _loaded_after(
        "import tempfile\nfrom typer.testing import CliRunner\nfrom selfheal.cli import app\n"
        "result = CliRunner().invoke(app, ['models', 'list', '--home', tempfile.mkdtemp()])\n"
        "assert result.exit_code == 0, result.output"
    )
    assert {"duckdb", "pandas"} <= listed


def test_the_store_package_loads_its_parts_on_first_use() -> None:
    light = _loaded_after("import store\nfrom store import StoreError, TIME_COLUMNS, Workspace")
    assert "duckdb" not in light

    assert "duckdb" in _loaded_after("from store import Store")  # the lazy name still resolves

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
from pathlib import Path

from store import Store, Workspace

# What a command loads only when it needs it (the scorer, the store, the responder, the LLM client).
HEAVY = ("langgraph", "langchain_core", "openai", "xgboost", "sklearn", "scipy", "duckdb", "pandas", "pyarrow")


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_importing_the_cli_loads_none_of_the_heavy_libraries() -> None:
    loaded = _loaded_after("import selfheal.cli")

    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_help_runs_without_them_and_a_command_still_gets_what_it_needs(tmp_path: Path) -> None:
    help_run = _loaded_after(
        "from typer.testing import CliRunner\nfrom selfheal.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\nassert result.exit_code == 0, result.output"
    )
    assert not help_run & set(HEAVY), sorted(help_run & set(HEAVY))

    # A real command imports its libraries when it runs (here the store and the scorer's validation). The
    # workspace is made here, not in the probe, which would then have imported them itself.
    Store.open(Workspace(tmp_path).ensure()).close()
    listed = _loaded_after(
        "from typer.testing import CliRunner\nfrom selfheal.cli import app\n"
        f"result = CliRunner().invoke(app, ['models', 'list', '--home', {str(tmp_path)!r}])\n"
        "assert result.exit_code == 0, result.output"
    )
    assert {"duckdb", "pandas"} <= listed


def test_the_store_package_loads_its_parts_on_first_use() -> None:
    light = _loaded_after("import store\nfrom store import StoreError, TIME_COLUMNS, Workspace")
    assert "duckdb" not in light

    assert "duckdb" in _loaded_after("from store import Store")  # the lazy name still resolves


def test_reading_the_record_loads_neither_the_agent_nor_the_monitors_statistics() -> None:
    """``incidents list``, ``runs`` and ``ask`` read the workspace: no LangGraph, no OpenAI client (no
    endpoint is configured here), and SciPy only when a threshold is computed. They took 4-7 s before."""
    agent_heavy = {"langgraph", "langchain_core", "openai", "scipy", "sklearn", "xgboost"}
    seeded = (  # a workspace with one incident, so that ask answers a question about it
        "import os, tempfile, datetime\nfor k in ('OPENAI_BASE_URL', 'OPENAI_API_KEY'): os.environ.pop(k, None)\n"
        "from store import Store, Workspace\nhome = tempfile.mkdtemp()\nat = datetime.datetime(2018, 5, 20, 10)\n"
        "with Store.open(Workspace(home).ensure()) as store:\n"
        "    store.execute(\"INSERT INTO incidents (incident_id, number, dedup_key, kind, subject, severity, status, "
        "title, opened_at, updated_at, first_breach_at, evidence) VALUES ('INC-1', 1, 'k', 'data_quality', 'amount', "
        "'high', 'open', 'amount is null', ?, ?, ?, '{}')\", [at, at, at])\n"
    )
    for command in (["incidents", "list"], ["runs"], ["ask", "INC-1", "what happened"]):
        loaded = _loaded_after(
            f"{seeded}from typer.testing import CliRunner\nfrom selfheal.cli import app\n"
            f"result = CliRunner().invoke(app, [*{command!r}, '--home', home])\n"
            "assert result.exit_code == 0, result.output\nassert 'INC-1' in result.output or 'investigations' in result.output"
        )
        assert not loaded & agent_heavy, (command, sorted(loaded & agent_heavy))

    # The lazy names still resolve, and a threshold still gets SciPy.
    resolved = _loaded_after(
        "from tools import call_tool, registered_tools\nassert 'rollback_model' in registered_tools()\n"
        "from agent.llm import LLMClient\nfrom monitor.thresholds import psi_no_drift_quantile\n"
        "assert psi_no_drift_quantile(1000, 1000, 10, q=0.99) > 0"
    )
    assert {"openai", "scipy"} <= resolved


def test_python_dash_m_selfheal_is_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "selfheal", "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "self-healing MLOps platform" in done.stdout and "incidents" in done.stdout

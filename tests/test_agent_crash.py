"""Crash safety: SIGKILL the process inside each side-effecting node; a restarted loop finishes the job.

A child process plays a feature-pipeline outage through scorer, monitor and responder and kills itself
(SIGKILL, no cleanup) right after a side effect of the chosen node, or between a step's saved writes and
the checkpoint that follows them. The parent then does what a restarted `selfheal run` does: opens the
same workspace, resumes the investigation from its SQLite checkpoint and plays on. Every action must be
applied exactly once, one page at most, and the investigation must finish.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from selfheal.app import Platform
from store import Workspace
from tests.conftest import SmallWorld
from tests.responder_worlds import play
from tools.audit import ActionLog
from tools.pagers import OutboxPager

REPO = Path(__file__).resolve().parents[1]
FEATURES = ["customer_avg_amount_30d", "terminal_tx_count_30d"]
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from tests.conftest import HISTORY_DAYS, MEDIUM_WORLD, SmallWorld
    from tests.responder_worlds import play
    from scorer.simulate import Simulator

    template, home, node, what = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    simulator = Simulator(MEDIUM_WORLD)
    world = SmallWorld(simulator, simulator.generate(0, HISTORY_DAYS), template)

    def crash(at_node: str, at_what: str) -> None:
        if at_node == node and at_what.startswith(what):
            os.kill(os.getpid(), signal.SIGKILL)

    if what == "checkpoint":  # die between the node's saved writes and the next checkpoint
        from langgraph.checkpoint.sqlite import SqliteSaver

        put, put_writes, last = SqliteSaver.put, SqliteSaver.put_writes, {}

        def remember(self, config, writes, task_id, task_path=""):
            last["node"] = task_path.rpartition(", ")[2]  # "~__pregel_pull, act": the node's name
            return put_writes(self, config, writes, task_id, task_path)

        def die_before(self, config, checkpoint, metadata, new_versions):
            if last.get("node") == node:
                os.kill(os.getpid(), signal.SIGKILL)
            return put(self, config, checkpoint, metadata, new_versions)

        SqliteSaver.put_writes, SqliteSaver.put = remember, die_before
    fault = world.fault("feature_nulls", {"features": FEATURES}, 0, 2, 6)
    play(world, home, [fault], days=1, after_side_effect=crash)
    sys.exit(3)  # the kill point was never reached
    """
).replace("FEATURES", repr(FEATURES))


@pytest.mark.parametrize(
    ("node", "what"),
    [
        ("load_incident", "status"),
        ("act", "quarantine_feature"),
        ("notify", "page"),
        ("report", "files"),
        # Killed after a step's writes were saved but before its checkpoint: LangGraph then reports no
        # `next` node although the step's successors never ran (the first: nothing was investigated).
        ("__start__", "checkpoint"),
        ("act", "checkpoint"),
    ],
)
def test_a_kill_inside_a_side_effecting_node_resumes_without_repeating_anything(
    medium_world: SmallWorld, tmp_path: Path, node: str, what: str
) -> None:
    world = medium_world
    home = tmp_path / "ws"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(world.template), str(home), node, what],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert child.returncode == -signal.SIGKILL, f"the child was not killed at {node}/{what}: {child.stderr[-2000:]}"

    resumed = play(world, home, [], days=1, start_day=1, resume="INC-1")
    run = resumed.run_for("INC-1")
    assert run["status"] == "done", run["status"]
    state = run["state"]
    assert state["diagnosis"]["root_cause"] == "feature_pipeline_break"
    with Platform(Workspace(home)) as platform:
        audit = ActionLog(platform.store, platform.clock).rows(incident_id="INC-1")
        pages = [r for r in OutboxPager(platform.store).rows(incident_id="INC-1") if r.channel == "outbox"]
    applied = Counter(r.idempotency_key for r in audit if r.status == "applied")
    assert applied and max(applied.values()) == 1, f"an action was applied twice: {applied}"
    quarantined = sorted(r.args["feature"] for r in audit if r.action == "quarantine_feature" and r.status == "applied")
    assert quarantined == sorted(FEATURES)
    assert [p.action for p in pages].count("trigger") == 1
    assert state["page_decision"]["sent"] is True and Path(state["report"]["html"]).exists()

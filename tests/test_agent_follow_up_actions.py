"""An action step guarded by an earlier action's saved result runs after that action (retrain -> promote).

The deterministic planner renders the runbook's action steps before any runs, so a step such as
``promote_model`` when ``results.retrain.beats_champion`` could never be planned: the retrain had not
happened yet (the eval suite's new-fraud-pattern case retrained and never promoted). The ``act`` node now
plans such steps once the action they wait on has saved its result.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import SmallWorld
from tests.responder_worlds import Played, play

REPO = Path(__file__).resolve().parents[1]
FOLLOW_UP = """## Remediate

```action
action: add_note
args: {text: "first step of the fix"}
save_as: first
```

```action
action: add_note
args: {text: "follows {{ results.first.audit_id }}"}
when: "results.first.status == 'applied'"
```

## Verify"""


@pytest.fixture(scope="module")
def played(medium_world: SmallWorld, tmp_path_factory: pytest.TempPathFactory) -> Played:
    runbooks = tmp_path_factory.mktemp("follow-up-runbooks")
    for path in (REPO / "runbooks").glob("*.md"):
        shutil.copy(path, runbooks)
    text = (runbooks / "feature_pipeline_break.md").read_text()
    start, end = text.index("## Remediate"), text.index("## Verify")
    (runbooks / "feature_pipeline_break.md").write_text(
        text[:start] + FOLLOW_UP + text[end + len("## Verify") :]
    )
    fault = medium_world.fault("feature_nulls", {"features": ["customer_avg_amount_30d"]}, 0, 9, 4)
    return play(medium_world, tmp_path_factory.mktemp("follow-up") / "ws", [fault], days=1, runbooks_dir=runbooks,
                stop=lambda events: any(e.what == "investigated" for e in events))  # fmt: skip


def test_a_step_waiting_on_an_earlier_actions_result_runs_after_it(played: Played) -> None:
    state = played.run_for("INC-1")["state"]
    notes = [a for a in state["plan"] if a["action"] == "add_note"]
    assert [n["status"] for n in notes] == ["applied", "applied"], notes
    first, follow_up = notes
    assert follow_up["args"]["text"] == f"follows {first['audit_id']}"
    assert state["results"]["first"]["audit_id"] == first["audit_id"]
    assert any(
        "planned after an earlier action's result: add_note" in s.get("note", "") for s in state["steps"]
    )

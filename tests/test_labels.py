"""`selfheal labels FILE`: labels that arrive after scoring, for a team that scores with `score` or a service."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from scorer import columns as C
from selfheal.app import Platform
from selfheal.cli import app
from store import Workspace
from tests.conftest import HISTORY_DAYS, SmallWorld

runner = CliRunner()


def test_a_labels_file_in_the_handbooks_spelling_reaches_the_workspace(
    small_world: SmallWorld, tmp_path: Path
) -> None:
    home = tmp_path / "workspace"
    shutil.copytree(small_world.template, home)
    day = small_world.simulator.generate(HISTORY_DAYS, 1).head(200)
    with Platform(Workspace(home)) as platform:
        platform.scorer.score_batch(day.drop(columns=[C.LABEL, C.FRAUD_SCENARIO]))
    truth = day[[C.TRANSACTION_ID, C.LABEL]].rename(columns={C.TRANSACTION_ID: "TRANSACTION_ID", C.LABEL: "TX_FRAUD"})
    good = tmp_path / "chargebacks.csv"
    truth.to_csv(good, index=False)

    result = runner.invoke(app, ["labels", str(good), "--json", "--home", str(home)])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"received": 200, "applied": 200, "scored": 200, "refused": 0, "refusals": []}
    with Platform(Workspace(home)) as platform:
        stored = platform.store.query("SELECT transaction_id, is_fraud FROM labels")
    expected = dict(zip(truth["TRANSACTION_ID"].astype(str), truth["TX_FRAUD"].astype(int), strict=True))
    assert dict(zip(stored["transaction_id"], stored["is_fraud"], strict=True)) == expected

    bad = tmp_path / "bad.csv"
    pd.DataFrame({"transaction_id": ["a", ""], "is_fraud": ["maybe", "1"]}).to_csv(bad, index=False)
    refused = runner.invoke(app, ["labels", str(bad), "--home", str(home)])
    assert refused.exit_code == 1  # nothing could be applied
    said = " ".join(refused.output.split())
    assert "applied 0 labels" in said and "refused 2 rows:" in said
    assert "is_fraud must be 0 or 1" in said and "missing transaction_id" in said
    missing = runner.invoke(app, ["labels", str(tmp_path / "nope.csv"), "--home", str(home)])
    assert missing.exit_code == 1 and "no such file" in missing.output

"""The multi-day scenarios of the default suite at small size, one seed (the rest is in `test_evals.py`).

A file of its own so that xdist (`--dist loadfile`) plays these beside the one-day ones. Together the two
files play every scenario of the suite; any expectation that stops holding fails `make test`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.suite import SuiteOptions, run_suite
from selfheal.cli_eval import open_platform
from tests.test_evals import SMALL_SUBSET, SUITE, failures, subset

MULTI_DAY = (
    "bad-deploy-inverted-labels",
    "control-benign-seasonal",
    "control-quiet-days",
    "label-stall-chargeback-feed",
    "new-fraud-pattern-mid-amount",
    "population-shift-new-market",
    "slow-deploy-no-early-stopping",
)
# The one case the platform still gets wrong, and exactly how (evals/README.md): in the small world the
# mid-amount pattern lowers recall too little for the performance check and moves the alert rate too
# little for the alert-rate check, so nothing is raised. (At default size an alert-rate incident opens
# that no runbook claims.) Listed so that a fix (the set shrinks) or a new failure (it grows) shows.
KNOWN_FAILURES = {
    "new-fraud-pattern-mid-amount seed 7: detected",
    "new-fraud-pattern-mid-amount seed 7: root_cause",
    "new-fraud-pattern-mid-amount seed 7: end_state",  # (no page check: not detected, and none expected)
}


def test_the_two_files_play_the_whole_suite() -> None:
    assert sorted((*SMALL_SUBSET, *MULTI_DAY)) == sorted(s.id for s in SUITE)


@pytest.mark.slow
def test_multi_day_scenarios_hold_at_small_size(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    result = run_suite(
        subset(MULTI_DAY),
        SuiteOptions(seeds=1, size="small", cache_dir=tmp_path_factory.mktemp("eval-cache"), work_dir=tmp_path),
        open_platform,
    )
    assert [c.id for c in result.cases] == sorted(MULTI_DAY)
    failed = {line.split(": ")[0] + ": " + line.split(": ")[1] for line in failures(result)}
    assert failed == KNOWN_FAILURES, failures(result)
    summary = result.summary
    assert summary["false_incidents_on_controls"] == 0
    assert summary["forbidden_actions"] == summary["needless_actions"] == 0

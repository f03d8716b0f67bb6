"""The evidence lines of a summary (and so of every page): whole facts, never JSON cut mid-token.

The on-call engineer reads them in a page; they used to be the first 160 characters of a tool's JSON
(`"valid_days": {` and the line ended), found by an exploratory pass over the demo's summaries.
"""

from __future__ import annotations

import json

from agent.planners.deterministic import evidence_lines, output_gist

DIFF = {
    "a": 2,
    "b": 1,
    "params": {"early_stopping_rounds": {"a": None, "b": 50}, "n_estimators": {"a": 40, "b": 1000}},
    "valid_days": {"a": 7, "b": 7},
    "metrics": {"auc": {"a": 0.41, "b": 0.86}},
}


def test_a_tool_output_reads_as_whole_facts_within_the_limit() -> None:
    gist = output_gist(json.dumps(DIFF))

    assert gist.startswith("a=2, b=1, params: early_stopping_rounds/n_estimators, valid_days.a=7")
    assert len(gist) <= 160 + len(", …")
    assert "{" not in gist and '"' not in gist


def test_long_outputs_stop_at_a_whole_fact() -> None:
    wide = {f"field_{i}": i * 1.2345678 for i in range(60)}

    gist = output_gist(json.dumps(wide), limit=80)

    assert gist.endswith(", …") and len(gist) <= 80 + len(", …")
    facts = gist.removesuffix(", …").split(", ")
    assert facts == [f"field_{i}={i * 1.2345678:.4g}" for i in range(len(facts))]


def test_lists_scalars_empty_and_text_outputs() -> None:
    assert output_gist(json.dumps({"changes": [{"v": 9}], "rows": []})) == "changes: 1 item, rows: 0 items"
    assert output_gist("3.14159") == "3.142" and output_gist("{}") == "{}" and output_gist("[1, 2]") == "2 items"
    text = "not json at all " * 20
    cut = output_gist(text)
    assert cut.endswith(" …") and len(cut) <= 162 and text.startswith(cut.removesuffix(" …"))


def test_evidence_lines_use_the_gist() -> None:
    steps = [{"n": 3, "kind": "tool", "ok": True, "name": "diff_models", "output": json.dumps(DIFF)}]

    lines = evidence_lines({"evidence": {}}, steps)  # type: ignore[arg-type]

    assert lines == [f"step 3: diff_models -> {output_gist(json.dumps(DIFF))}"]

"""The deterministic planner: the matched runbook, executed exactly; abstain rather than guess.

Choice: the best-ranked runbook match (`RunbookLibrary.match` ranks a runbook that names the check which
raised the incident and whose trigger condition holds above one that only shares the kind). It abstains
when nothing matches, or when the two best matches rank equally and name different root causes: the
evidence fits two stories and a human should choose.
"""

from __future__ import annotations

import json
from typing import Any

from agent.context import AgentRuntime
from agent.runbook_steps import incident_scope, run_tool_steps, step_record
from agent.state import Diagnosis, ResponderState, StepRecord

# How sure a match makes us, by how specific it was (kind only / + check / + condition holds).
CONFIDENCE_BY_SCORE = ((5.0, 0.9), (3.0, 0.75), (0.0, 0.5))


def choose_runbook(matches: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str]:
    """(the match to follow or None, why)."""
    if not matches:
        return None, "no runbook triggers on this incident's kind and check"
    best = matches[0]
    rivals = [m for m in matches[1:] if m["score"] == best["score"] and m["root_cause"] != best["root_cause"]]
    if rivals:
        names = ", ".join(m["runbook_id"] for m in [best, *rivals])
        return None, f"conditions conflict: runbooks {names} match equally well and disagree on the root cause"
    return best, f"runbook {best['runbook_id']} matches best: " + "; ".join(best["reasons"])


def investigate(state: ResponderState, runtime: AgentRuntime) -> tuple[list[StepRecord], dict[str, Any]]:
    """Run the read steps of the runbook `choose_runbook` picks: (step records, results saved by them)."""
    chosen, _ = choose_runbook(state.get("matches", []))
    if chosen is None:
        return [step_record("investigate", "decision", "investigate", runtime, ok=True,
                            note="no runbook to follow: nothing to run")], {}
    scope = incident_scope(runtime, state["incident_id"], state.get("results"))
    records = run_tool_steps(runtime, state["incident_id"], runtime.runbooks.get(chosen["runbook_id"]), scope)
    return records, scope["results"]


def confidence(score: float) -> float:
    return next(value for floor, value in CONFIDENCE_BY_SCORE if score >= floor)


def diagnose(incident: dict[str, Any], matches: list[dict[str, Any]], steps: list[StepRecord]) -> Diagnosis:
    """Root cause, runbook and evidence from the matches and what the investigation saw."""
    chosen, reason = choose_runbook(matches)
    evidence = evidence_lines(incident, steps)
    if chosen is None:
        return {
            "root_cause": "none", "runbook_id": None, "confidence": 0.0, "evidence": evidence,
            "abstained": True, "reason": reason, "planner": "deterministic",
        }
    return {
        "root_cause": chosen["root_cause"], "runbook_id": chosen["runbook_id"],
        "confidence": confidence(float(chosen["score"])), "evidence": evidence,
        "abstained": False, "reason": reason, "planner": "deterministic",
    }


def evidence_lines(incident: dict[str, Any], steps: list[StepRecord]) -> list[str]:
    """Short, numbered facts with where each came from."""
    evidence = incident.get("evidence") or {}
    lines = []
    # metric, value, threshold and features head the summary already; these are the supporting numbers.
    for key in ("rows", "worst", "peak_value", "observed", "expected", "alert_rate", "reference_alert_rate",
                "latency_p99_ms", "baseline_p99_ms", "effect"):
        if key in evidence and evidence[key] not in (None, [], {}):
            value = evidence[key]
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"incident.evidence.{key} = {text[:160]}")
    for step in steps:
        if step.get("kind") == "tool" and step.get("ok") and step.get("output"):
            lines.append(f"step {step.get('n')}: {step.get('name')} -> {output_gist(step['output'])}")
    return lines[:12]


def output_gist(output: str, limit: int = 160) -> str:
    """A tool's JSON output as whole ``key=value`` facts within ``limit`` characters, for a summary a person
    reads: the first 160 characters of the JSON cut mid-token (``"valid_days": {``). Nested objects of plain
    values read as ``key.sub=value``; larger ones, and lists, by their size. The report has the output whole."""
    try:
        data = json.loads(output)
    except ValueError:  # not JSON (or already cut): cut at a word
        return output if len(output) <= limit else output[:limit].rsplit(" ", 1)[0] + " …"
    if not data:
        return json.dumps(data)
    if not isinstance(data, dict):
        return f"{len(data)} item{'s' if len(data) != 1 else ''}" if isinstance(data, list) else _fact_value(data)
    facts: list[str] = []
    for key, value in data.items():
        if isinstance(value, dict) and value and all(not isinstance(v, dict | list) for v in value.values()):
            facts += [f"{key}.{sub}={_fact_value(v)}" for sub, v in value.items()]
        elif isinstance(value, dict):  # name what it holds (diff_models: the parameters that differ)
            names = [str(name) for name in value]
            facts.append(f"{key}: " + "/".join(names[:4]) + ("/…" if len(names) > 4 else ""))
        elif isinstance(value, list):
            facts.append(f"{key}: {len(value)} item{'s' if len(value) != 1 else ''}")
        else:
            facts.append(f"{key}={_fact_value(value)}")
    text = ""
    for fact in facts:
        candidate = f"{text}, {fact}" if text else fact
        if len(candidate) > limit:
            return f"{text}, …" if text else fact[:limit] + " …"
        text = candidate
    return text


def _fact_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 40 else text[:39] + "…"

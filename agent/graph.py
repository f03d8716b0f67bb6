"""The responder as one LangGraph `StateGraph`:

    load_incident -> match_runbooks -> investigate -> diagnose -+-> plan -> (request_approval -> approval) -> act -> verify -+
                       |      ^                                 |                        ^        |     |
      (no runbook yet, |      |                                 | (abstained)            |  wait_for_data
       labels due soon)v      |                                 v                        (pending) <-+   |
                     wait_for_labels                       decide_page <------------------------------+
                                                                -> summarize -> notify -> report -> END

``approval``, ``wait_for_data`` and ``wait_for_labels`` pause with `interrupt()`; a thread (one per
investigation) resumes from its SQLite checkpoint in any process. Routers raise on a state that cannot
happen rather than guess.
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from agent import nodes
from agent.context import AgentRuntime
from agent.state import ResponderInput, ResponderState


def after_match(state: ResponderState) -> Literal["wait_for_labels", "investigate"]:
    return "wait_for_labels" if state.get("label_wait") else "investigate"


def after_diagnose(state: ResponderState) -> Literal["plan", "decide_page"]:
    diagnosis = state.get("diagnosis")
    if diagnosis is None:
        raise RuntimeError("diagnose finished without a diagnosis")
    return "decide_page" if diagnosis.get("abstained") else "plan"


def after_plan(state: ResponderState) -> Literal["request_approval", "act"]:
    needs_human = any(a.get("approval") == "human" and a.get("status") == "planned" for a in state.get("plan", []))
    return "request_approval" if needs_human else "act"


def after_verify(state: ResponderState) -> Literal["wait_for_data", "decide_page"]:
    status = state.get("verification", {}).get("status")
    if status is None:
        raise RuntimeError("verify finished without a verification status")
    return "wait_for_data" if status == "pending" else "decide_page"


def build_graph(
    checkpointer: Checkpointer = None,
) -> CompiledStateGraph[ResponderState, AgentRuntime, ResponderInput, ResponderState]:
    """The compiled responder graph (pass a checkpointer to make runs durable and resumable)."""
    graph = StateGraph(ResponderState, context_schema=AgentRuntime, input_schema=ResponderInput)
    for name in (
        "load_incident", "match_runbooks", "investigate", "diagnose", "plan", "request_approval", "approval", "act",
        "verify",
        "wait_for_data", "wait_for_labels", "decide_page", "summarize", "notify", "report",
    ):
        graph.add_node(name, getattr(nodes, name))
    graph.add_edge(START, "load_incident")
    graph.add_edge("load_incident", "match_runbooks")
    graph.add_conditional_edges("match_runbooks", after_match)
    graph.add_edge("wait_for_labels", "match_runbooks")
    graph.add_edge("investigate", "diagnose")
    graph.add_conditional_edges("diagnose", after_diagnose)
    graph.add_conditional_edges("plan", after_plan)
    graph.add_edge("request_approval", "approval")
    graph.add_edge("approval", "act")
    graph.add_edge("act", "verify")
    graph.add_conditional_edges("verify", after_verify)
    graph.add_edge("wait_for_data", "verify")
    graph.add_edge("decide_page", "summarize")
    graph.add_edge("summarize", "notify")
    graph.add_edge("notify", "report")
    graph.add_edge("report", END)
    return graph.compile(checkpointer=checkpointer, name="selfheal-responder")

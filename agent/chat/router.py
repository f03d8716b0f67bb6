"""The deterministic router: which of the known questions a message asks, by weighted word patterns.

Each intent has patterns with weights; the message's score for an intent is the sum of the weights of the
patterns it matches, and the best score wins (ties go to the intent listed first). A message that reaches
no intent's minimum is not guessed at: the chat says it cannot answer and lists what it can.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from agent.chat import answers, state_answers
from agent.chat.answers import Answer
from agent.chat.record import IncidentRecord

MIN_SCORE = 2
# Verbs of the actions, as people say them ("why did you roll back", "what did you restore, and why").
ACTED = r"roll|revert|restor|promot|quarantin|impute|releas|retrain|disabl|enabl|lower|rais|set|switch|act|do"


@dataclass(frozen=True)
class Intent:
    name: str
    example: str  # a question it answers, shown in /help and when a question is not understood
    patterns: tuple[tuple[str, int], ...]
    answer: Callable[[IncidentRecord, str], Answer]


# Order matters only for ties: the more specific intents come first.
INTENTS: tuple[Intent, ...] = (
    Intent(
        "paging",
        "Was anyone paged, and why (or why not)?",
        (
            (r"\bpag(e|ed|es|ing)\b", 3),
            (r"on-?call|pager|escalat|wake|wok(e|en)|notif", 3),
            (r"\bhuman\b|\bsomeone\b", 1),
        ),
        answers.paging,
    ),
    Intent(
        "timing",
        "How long did it take to detect and to mitigate?",
        (
            (r"how long|how fast|how quick|how many (minutes|hours)", 2),
            (r"time to|\bttd\b|\bttm\b|\bmttr\b", 3),
            (r"detect|mitigat|recover|fix", 1),
        ),
        state_answers.timing,
    ),
    Intent(
        "why_action",
        "Why did you roll back?",
        (
            (rf"\bwhy\b.*\b({ACTED})|\b({ACTED}).*\bwhy\b", 3),
            (rf"\b(did you|you|the agent|it) ({ACTED})", 2),
            (r"\bwhy\b", 1),
            (r"reason for|justif|rationale", 2),
        ),
        answers.why_action,
    ),
    Intent(
        "verified",
        "Was the fix verified?",
        (
            (r"verif", 3),
            (r"did (it|the fix|that|the rollback|the action) (work|hold|help)|is it fixed|working now", 3),
            (r"confirm|hold", 1),
        ),
        answers.verified,
    ),
    Intent(
        "root_cause",
        "What was the root cause, and how confident are you?",
        (
            (r"root ?cause|diagnos", 3),
            (r"why did (this|it) (happen|break|go wrong)|why (is|was) there an incident", 5),
            (r"confiden|sure|certain", 2),
            (r"\bcaused?\b|what happened|what went wrong", 2),
        ),
        answers.root_cause,
    ),
    Intent(
        "what_changed",
        "What changed before it started?",
        (
            (r"what changed|what was changed|changes?\b", 3),
            (r"deploy|rollout|differen", 2),
        ),
        state_answers.what_changed,
    ),
    Intent(
        "since_when",
        "Since when has this been going on?",
        (
            (r"since when|when did (it|this|the incident)|when (was it|it was) (detected|opened)", 3),
            (r"\bstart|\bbegan|\bbegin|first (breach|seen|noticed)|going on", 2),
            (r"\bwhen\b", 1),
        ),
        state_answers.since_when,
    ),
    Intent(
        "serving",
        "Which model and threshold are serving now?",
        (
            (r"serv(ing|es)|champion|in production|live model|right now|\bcurrent(ly)?\b", 3),
            (r"which (model|version)|what (model|version)", 2),
            (r"threshold|\bmodel\b|quarantined", 1),
        ),
        state_answers.serving_now,
    ),
    Intent(
        "evidence",
        "What evidence is there?",
        ((r"evidence|numbers|metric|data show|what did (you|the monitor) see|psi|null rate|alert rate", 3),),
        state_answers.evidence,
    ),
    Intent(
        "runbook", "Which runbook did you follow?", ((r"runbook|playbook|procedure", 3),), answers.runbook
    ),
    Intent("report", "Where is the report?", ((r"report|write-?up|post-?mortem", 3),), state_answers.report),
    Intent(
        "actions",
        "What did you do?",
        (
            (r"what (did you|have you|was) (do|done|did)|what actions?|actions? (taken|did)|audit", 3),
            (r"\bactions?\b", 2),
        ),
        answers.actions,
    ),
    Intent(
        "steps",
        "Which tools did the investigation run?",
        ((r"\btools?\b|\bsteps?\b|investigat|queries|look at", 2),),
        answers.steps,
    ),
    Intent(
        "status",
        "What is the status of the incident?",
        ((r"status|still open|resolved|closed|is it over|where (does|do) (it|we) stand", 4),),
        state_answers.status,
    ),
)


def route(message: str) -> Intent | None:
    """The intent a message asks about, or None when none reaches the minimum score."""
    text = " ".join(message.lower().split())
    best: tuple[int, Intent] | None = None
    for intent in INTENTS:
        score = sum(weight for pattern, weight in intent.patterns if re.search(pattern, text))
        if score >= MIN_SCORE and (best is None or score > best[0]):
            best = (score, intent)
    return None if best is None else best[1]


def capabilities() -> list[str]:
    """The questions the router answers, one example each."""
    return [f"{intent.example} (`{intent.name}`)" for intent in INTENTS]

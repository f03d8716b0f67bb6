"""Deterministic fallback rules: what serves when the model must not (or cannot) be used.

Rules are data: each names the features it reads, a condition and the score it gives. The score of a
transaction is the highest score of the rules that fire (or the base score), so decisions keep the same
thresholds as the model's. They are written from the fraud patterns a payments team knows (and that the
simulator reproduces): very large amounts, terminals with recent confirmed fraud, and a card whose
spending suddenly jumps above its own habit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import pandas as pd

BASE_SCORE = 0.01
# Feature name -> values: a feature frame, or the scorer's arrays (no frame is built to run the rules).
Features: TypeAlias = pd.DataFrame | Mapping[str, np.ndarray]


def _values(features: Features, name: str) -> np.ndarray:
    return np.asarray(features[name], dtype=np.float64)


@dataclass(frozen=True)
class Rule:
    """One fallback rule."""

    name: str
    description: str
    reads: tuple[str, ...]
    condition: Callable[[Features], np.ndarray]
    score: float


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        "large_amount",
        "amount above 220: rare for genuine cards, common for fraud",
        ("amount",),
        lambda f: _values(f, "amount") > 220.0,
        0.9,
    ),
    Rule(
        "risky_terminal",
        "the terminal had confirmed fraud in its last labelled week (at least 2 transactions seen)",
        ("terminal_risk_7d", "terminal_tx_count_7d"),
        lambda f: (_values(f, "terminal_risk_7d") >= 0.3) & (_values(f, "terminal_tx_count_7d") >= 2),
        0.8,
    ),
    Rule(
        "spending_spike",
        "today's average amount is over 3x the card's 30-day average, with some history",
        ("customer_avg_amount_1d", "customer_avg_amount_30d", "customer_tx_count_30d"),
        lambda f: (_values(f, "customer_avg_amount_1d") > 3.0 * _values(f, "customer_avg_amount_30d"))
        & (_values(f, "customer_tx_count_30d") >= 5),
        0.6,
    ),
)


@dataclass(frozen=True)
class RuleScores:
    scores: np.ndarray
    fired: np.ndarray  # name of the highest rule that fired per row, or "" when none did


def score_with_rules(features: Features, rules: tuple[Rule, ...] = DEFAULT_RULES) -> RuleScores:
    """Score features (a frame or name -> array) with the rules (vectorised); NaN inputs never fire a rule."""
    n = len(features) if isinstance(features, pd.DataFrame) else len(next(iter(features.values()), ()))
    scores = np.full(n, BASE_SCORE)
    fired = np.full(n, "", dtype=object)
    for rule in sorted(rules, key=lambda r: r.score):
        with np.errstate(invalid="ignore"):
            hit = np.asarray(rule.condition(features), dtype=bool)
        better = hit & (rule.score > scores)
        scores[better] = rule.score
        fired[better] = rule.name
    return RuleScores(scores=scores, fired=fired)

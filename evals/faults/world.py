"""Stream faults in the world: customers and fraudsters behave differently, so labels change with them.

New fraud is labelled (``is_fraud`` 1, its own ``fraud_scenario`` code) because it happened; benign
changes keep their labels.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Final, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from evals.faults.base import (
    SCENARIO_CARD_TESTING,
    SCENARIO_NEW_PATTERN,
    IncidentKind,
    RootCause,
    affected_rows,
    register_fault,
)
from evals.faults.stream import StreamFault
from scorer import columns as C
from scorer.simulate import SCENARIO_NONE

# Ids of customers that population_shift brings in: far above any simulated world's customer ids.
NEW_CUSTOMER_ID_BASE: Final = 1_000_000_000
_ONLINE: Final = C.CHANNELS[1]


def _genuine_cards(frame: pd.DataFrame) -> np.ndarray:
    """Rows of genuine transactions on cards with no fraud this day (cards "not otherwise compromised")."""
    fraud_cards = frame.loc[frame[C.LABEL] == 1, C.CUSTOMER_ID].unique()
    return np.asarray((frame[C.FRAUD_SCENARIO] == SCENARIO_NONE) & ~frame[C.CUSTOMER_ID].isin(fraud_cards))


def _move_to_terminals(frame: pd.DataFrame, rows: np.ndarray, sources: np.ndarray) -> pd.DataFrame:
    """Put ``rows`` at the terminals of ``sources`` rows, with those terminals' merchant fields."""
    moved = frame.copy()
    for column in (C.TERMINAL_ID, C.MERCHANT_NAME, C.MCC, C.COUNTRY):
        if column in frame:
            values = moved[column].to_numpy(copy=True)
            values[rows] = frame[column].to_numpy()[sources]
            moved[column] = pd.array(values, dtype=frame[column].dtype)
    return moved


def _set_channel(frame: pd.DataFrame, rows: np.ndarray, channel: str) -> None:
    if C.CHANNEL in frame:
        values = frame[C.CHANNEL].astype(object).to_numpy(copy=True)
        values[rows] = channel
        frame[C.CHANNEL] = pd.array(values, dtype=frame[C.CHANNEL].dtype)


def _label_fraud(frame: pd.DataFrame, rows: np.ndarray, scenario: int) -> None:
    label = frame[C.LABEL].to_numpy(copy=True)
    code = frame[C.FRAUD_SCENARIO].to_numpy(copy=True)
    label[rows], code[rows] = 1, scenario
    frame[C.LABEL], frame[C.FRAUD_SCENARIO] = label, code


@register_fault
class CardTesting(StreamFault):
    """Card testing: fraudsters try stolen card numbers with many tiny online payments at one or two merchants.

    Injects new transactions (``share`` x the rows in the window) at two terminals seen in the window,
    on random cards of the day, online, for amounts up to ``amount_max``, spread over the window. Every
    one is fraud (``fraud_scenario`` 4). The model never saw fraud this small, so it misses them.

    Parameters:
        share: Injected rows as a fraction of the window's rows (0.05: 5 % more traffic, all testing).
        amount_max: Largest test amount; amounts are uniform in [0.5, amount_max].

    Root cause ``new_fraud_pattern``; expected incidents: ``performance_decay``, ``data_drift``.
    """

    kind: ClassVar[str] = "card_testing"
    root_cause: ClassVar[RootCause] = "new_fraud_pattern"
    expected_kinds: ClassVar[tuple[IncidentKind, ...]] = ("performance_decay", "data_drift")
    example_params: ClassVar[dict[str, Any]] = {"share": 0.05, "amount_max": 2.0}

    share: Annotated[float, Field(gt=0.0, le=1.0)] = Field(description="injected rows per row in the window")
    amount_max: Annotated[float, Field(ge=0.5, le=20.0)] = Field(2.0, description="largest test amount")

    def apply_transactions(self, frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        window = np.flatnonzero(self.in_window(frame[C.TIMESTAMP]))
        count = round(self.share * len(window))
        if count == 0:
            return frame
        terminals = rng.choice(window, size=min(2, len(window)), replace=False)
        # Copies of rows at those terminals carry the terminal's merchant fields; the rest is rewritten.
        added = frame.iloc[rng.choice(terminals, size=count)].reset_index(drop=True)
        added[C.CUSTOMER_ID] = frame[C.CUSTOMER_ID].to_numpy()[rng.integers(0, len(frame), size=count)]
        first = frame[C.TIMESTAMP].iloc[window[0]]
        span_s = max((frame[C.TIMESTAMP].iloc[window[-1]] - first).total_seconds(), 1.0)
        added[C.TIMESTAMP] = first + pd.to_timedelta(
            np.sort(rng.uniform(0, span_s, size=count)).round(), unit="s"
        )
        added[C.AMOUNT] = np.round(rng.uniform(0.5, self.amount_max, size=count), 2)
        added[C.TRANSACTION_ID] = int(frame[C.TRANSACTION_ID].max()) + 1 + np.arange(count, dtype=np.int64)
        _set_channel(added, np.arange(count), _ONLINE)
        _label_fraud(added, np.arange(count), SCENARIO_CARD_TESTING)
        return pd.concat([frame, added], ignore_index=True)


@register_fault
class PopulationShift(StreamFault):
    """New customers arrive with a different spending profile (a new market, a partner's card base).

    A share of the window's genuine transactions move to brand-new customers (ids from 1,000,000,000,
    never seen before, the same pool every day so they build a history) who spend more per purchase
    (about 60-160, never above the 220 fraud line) and more often online. Their transactions stay genuine.
    The platform should note the drift and keep serving while performance holds.

    Parameters:
        new_customer_share: Fraction of the window's genuine rows made by new customers.

    Root cause ``population_shift``; expected incident: ``data_drift``.
    """

    kind: ClassVar[str] = "population_shift"
    root_cause: ClassVar[RootCause] = "population_shift"
    expected_kinds: ClassVar[tuple[IncidentKind, ...]] = ("data_drift",)
    example_params: ClassVar[dict[str, Any]] = {"new_customer_share": 0.3}

    new_customer_share: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        description="fraction of the window's genuine rows made by new customers"
    )

    def apply_transactions(self, frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        rows = np.flatnonzero(
            affected_rows(self, frame, rng, self.new_customer_share) & _genuine_cards(frame)
        )
        if len(rows) == 0:
            return frame
        pool = max(1, len(rows) // 3)  # each new customer makes about three of the moved transactions
        customer = rng.integers(0, pool, size=len(rows))
        # A fixed profile per new customer, from its id alone, so it is the same every day.
        mean = 60.0 + 100.0 * np.modf(customer * 0.6180339887)[0]
        amount = np.clip(rng.normal(mean, mean / 4), 1.0, 215.0).round(2)
        shifted = frame.copy()
        ids = shifted[C.CUSTOMER_ID].to_numpy(copy=True)
        ids[rows] = NEW_CUSTOMER_ID_BASE + customer
        shifted[C.CUSTOMER_ID] = ids
        amounts = shifted[C.AMOUNT].to_numpy(copy=True)
        amounts[rows] = amount
        shifted[C.AMOUNT] = amounts
        _set_channel(shifted, rows[rng.random(len(rows)) < 0.6], _ONLINE)
        return shifted


FraudPattern = Literal["mid_amount_online", "account_takeover"]


@register_fault
class NewFraudPattern(StreamFault):
    """Fraud of a kind the model has not learnt, on cards that are not otherwise compromised.

    Patterns:
        ``mid_amount_online``: online purchases of 60-200 at random terminals of the day (not the card's
            own), below the 220 line the model learnt and unlike the terminal and card scenarios.
        ``account_takeover``: an attacker with the card's credentials buys where the card usually
            does, at 2-4x the amount of the purchase it replaces (capped at 219), on the same channel.

    Affected rows are genuine transactions turned into such fraud: ``is_fraud`` 1, ``fraud_scenario`` 5.

    Parameters:
        pattern: One of the patterns above.
        rate: Fraction of the window's rows turned into fraud of that pattern.

    Root cause ``new_fraud_pattern``; expected incidents: ``performance_decay``, ``prediction_drift``.
    """

    kind: ClassVar[str] = "new_fraud_pattern"
    root_cause: ClassVar[RootCause] = "new_fraud_pattern"
    expected_kinds: ClassVar[tuple[IncidentKind, ...]] = ("performance_decay", "prediction_drift")
    example_params: ClassVar[dict[str, Any]] = {"pattern": "mid_amount_online", "rate": 0.05}

    pattern: FraudPattern = Field("mid_amount_online", description="which new fraud pattern (see the class)")
    rate: Annotated[float, Field(gt=0.0, le=0.5)] = Field(
        description="fraction of the window's rows turned into fraud"
    )

    def apply_transactions(self, frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        rows = np.flatnonzero(affected_rows(self, frame, rng, self.rate) & _genuine_cards(frame))
        if len(rows) == 0:
            return frame
        if self.pattern == "mid_amount_online":
            window = np.flatnonzero(self.in_window(frame[C.TIMESTAMP]))
            changed = _move_to_terminals(frame, rows, rng.choice(window, size=len(rows)))
            amount = rng.uniform(60.0, 200.0, size=len(rows))
            _set_channel(changed, rows, _ONLINE)
        else:
            changed = frame.copy()
            amount = np.minimum(
                frame[C.AMOUNT].to_numpy()[rows] * rng.uniform(2.0, 4.0, size=len(rows)), 219.0
            )
        amounts = changed[C.AMOUNT].to_numpy(copy=True)
        amounts[rows] = np.round(amount, 2)
        changed[C.AMOUNT] = amounts
        _label_fraud(changed, rows, SCENARIO_NEW_PATTERN)
        return changed


@register_fault
class BenignSeasonal(StreamFault):
    """A holiday-like mild shift: people spend a little more at certain hours. Not a fault at all.

    Amounts of transactions made during the given hours of the day are multiplied by ``amount_factor``.
    Labels are unchanged (the purchases are genuine). The platform should raise nothing: seasonal
    baselines absorb it, and a responder that "fixes" it is wrong.

    Parameters:
        amount_factor: Multiplies amounts during ``hours`` (1.15: 15 % bigger baskets).
        hours: Hours of the day (0-23) the shift applies to.

    Root cause ``benign_seasonal_shift``; expected incidents: none.
    """

    kind: ClassVar[str] = "benign_seasonal"
    root_cause: ClassVar[RootCause] = "benign_seasonal_shift"
    expected_kinds: ClassVar[tuple[IncidentKind, ...]] = ()
    example_params: ClassVar[dict[str, Any]] = {
        "amount_factor": 1.15,
        "hours": [9, 10, 11, 12, 13, 14, 15, 16, 17],
    }

    amount_factor: Annotated[float, Field(gt=0.5, lt=2.0)] = Field(
        description="multiplies amounts during hours"
    )
    hours: list[Annotated[int, Field(ge=0, le=23)]] = Field(
        default_factory=lambda: list(range(24)),
        min_length=1,
        description="hours of the day (0-23) it applies to",
    )

    def apply_transactions(self, frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        hit = self.in_window(frame[C.TIMESTAMP]) & frame[C.TIMESTAMP].dt.hour.isin(self.hours).to_numpy()
        amount = frame[C.AMOUNT].to_numpy(dtype=np.float64, copy=True)
        amount[hit] = np.round(amount[hit] * self.amount_factor, 2)
        return frame.assign(**{C.AMOUNT: amount})

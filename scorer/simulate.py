"""Card-transaction simulator: our own implementation of the Fraud Detection Handbook's generator.

Built from the published description (Le Borgne et al., "Reproducible Machine Learning for Credit Card
Fraud Detection - Practical Handbook", chapter 3.2), not from its code:

* customers sit at uniform (x, y) on a 100 x 100 plane with ``mean_amount ~ U(5, 100)``,
  ``std_amount = mean_amount / 2`` and ``mean_nb_tx_per_day ~ U(0, 4)``; terminals sit at uniform (x, y);
  a customer uses the terminals closer than ``radius`` to it;
* each day each customer makes ``Poisson(mean_nb_tx_per_day)`` transactions, at a second of the day drawn
  from ``Normal(43200, 20000)`` (kept only inside the day), for an amount drawn from
  ``Normal(mean, std)`` (a negative draw is replaced by ``U(0, 2 * mean)``, then rounded to cents), at a
  terminal drawn uniformly among the customer's terminals (customers without one make no transactions);
* fraud, applied in this order so later scenarios overwrite earlier ones: (1) amount > 220; (2) each day
  2 random terminals are compromised and all their transactions of the next 28 days are fraud; (3) each
  day 3 random cards are compromised and for the next 14 days a third of their transactions are
  multiplied by 5 and are fraud.

Determinism: every random draw comes from a numpy stream keyed by ``(seed, purpose, day)``, so any day can
be generated on its own: ``Simulator(cfg).day(35)`` equals day 35 inside ``generate(0, 60)``. The fraud
state of a day (which terminals and cards are compromised) is the union of the compromise draws of the
previous 28 / 14 days, and those draws need no transactions, so it is recomputed cheaply.

Transaction ids: ``day_index * TX_ID_DAY_STRIDE + rank of the transaction within its day`` (by time).
They are unique and increase with time across any run, and a day's ids do not depend on where a run
starts; they are consecutive within a day but not across days.

Extensions (``channel``, ``merchant_name``, ``mcc``, ``country``) come from their own random streams, so
turning them on or off, or changing ``online_share``, never changes a single core value (ids, times,
customers, terminals, amounts, labels).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scorer import columns as C

SECONDS_PER_DAY: Final = 86_400
SECONDS_PER_HOUR: Final = 3_600
# A day has ~10k transactions at the default size; 10M leaves room for worlds 1000x larger.
TX_ID_DAY_STRIDE: Final = 10_000_000
PLANE_SIZE: Final = 100.0

# Time of day, as in the handbook's description: Normal(noon, 20000 s), kept only inside the day.
_TIME_MEAN_S: Final = SECONDS_PER_DAY / 2
_TIME_STD_S: Final = 20_000.0

# Scenario codes of the fraud_scenario column.
SCENARIO_NONE: Final = 0
SCENARIO_AMOUNT: Final = 1
SCENARIO_TERMINAL: Final = 2
SCENARIO_CARD: Final = 3

LABEL_TIME: Final = "label_time"
LABEL_COLUMNS: Final = (C.LABEL, C.FRAUD_SCENARIO)
CORE_COLUMNS: Final = (C.TRANSACTION_ID, C.TIMESTAMP, C.CUSTOMER_ID, C.TERMINAL_ID, C.AMOUNT)
EXTENSION_COLUMNS: Final = (C.CHANNEL, C.MERCHANT_NAME, C.MCC, C.COUNTRY)

# Purposes of the random streams: each purpose has its own stream so that adding draws to one never
# shifts another (the reason extensions cannot perturb the handbook statistics).
_STREAM_CUSTOMERS: Final = 1
_STREAM_TERMINALS: Final = 2
_STREAM_MERCHANTS: Final = 3
_STREAM_DAY: Final = 4
_STREAM_CHANNEL: Final = 5
_STREAM_COMPROMISED_TERMINALS: Final = 6
_STREAM_COMPROMISED_CARDS: Final = 7

# (mcc, share of terminals, words a merchant of that kind puts after its name).
_MCC_TABLE: Final[tuple[tuple[str, float, tuple[str, ...]], ...]] = (
    ("5411", 0.22, ("Market", "Fresh Foods", "Supermarket", "Grocer")),  # grocery stores
    ("5812", 0.14, ("Bistro", "Brasserie", "Kitchen", "Trattoria")),  # restaurants
    ("5814", 0.08, ("Burgers", "Frituur", "Snack Bar", "Pizza")),  # fast food
    ("5462", 0.07, ("Bakery", "Boulangerie", "Patisserie")),  # bakeries
    ("5541", 0.08, ("Fuel", "Service Station", "Petrol")),  # service stations
    ("5912", 0.06, ("Pharmacy", "Apotheek", "Chemist")),  # drug stores
    ("5651", 0.06, ("Fashion", "Outfitters", "Boutique")),  # family clothing
    ("5999", 0.06, ("Shop", "Store", "Trading")),  # miscellaneous retail
    ("5311", 0.04, ("Department Store", "Galleries")),  # department stores
    ("5732", 0.04, ("Electronics", "Digital", "Tech Store")),  # electronics
    ("5942", 0.03, ("Books", "Bookshop")),  # book stores
    ("4121", 0.03, ("Taxi", "Cabs")),  # taxis
    ("4111", 0.03, ("Transit", "Rail")),  # commuter transport
    ("5813", 0.02, ("Pub", "Café", "Bar")),  # bars
    ("7011", 0.02, ("Hotel", "Inn")),  # hotels
    ("7832", 0.02, ("Cinema", "Pictures")),  # cinemas
)
_MERCHANT_STEMS: Final = (
    "Peeters", "Janssens", "Maes", "Jacobs", "Mertens", "Willems", "Claes", "Goossens", "Wouters",
    "De Smet", "Dubois", "Lambert", "Dupont", "Leclercq", "Hermans", "Aerts", "Vermeulen", "Lemaire",
    "Golden", "Royal", "Central", "Corner", "City", "Park", "Riverside", "Old Town", "Green", "Sunny",
    "Blue Door", "Station", "Grand", "Little", "Harbour", "Market Square", "North Gate", "Linden",
)  # fmt: skip
# Foreign countries of terminals, with relative weights (neighbours first).
_FOREIGN_COUNTRIES: Final = (("FR", 0.3), ("NL", 0.25), ("DE", 0.15), ("LU", 0.1), ("GB", 0.08),
                             ("ES", 0.05), ("IT", 0.04), ("US", 0.03))  # fmt: skip

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class WorldConfig(BaseModel):
    """Everything that defines a simulated world; the defaults are the handbook's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: Annotated[int, Field(ge=0)] = 0
    customers: Annotated[int, Field(ge=1)] = 5000
    terminals: Annotated[int, Field(ge=1)] = 10000
    radius: Annotated[float, Field(gt=0)] = 5.0
    start_date: str = "2018-04-01"
    label_delay_days: Annotated[int, Field(ge=0)] = 7
    # Extensions: optional columns that the handbook data does not have.
    extensions: bool = True
    online_share: Annotated[float, Field(ge=0, le=1)] = 0.2
    home_country: Annotated[str, Field(min_length=2, max_length=2)] = "BE"
    foreign_terminal_share: Annotated[float, Field(ge=0, le=1)] = 0.03
    # Fraud scenarios (handbook values). Evals may change them to inject new fraud patterns.
    fraud_amount_threshold: float = 220.0
    compromised_terminals_per_day: Annotated[int, Field(ge=0)] = 2
    terminal_compromise_days: Annotated[int, Field(ge=1)] = 28
    compromised_cards_per_day: Annotated[int, Field(ge=0)] = 3
    card_compromise_days: Annotated[int, Field(ge=1)] = 14
    card_fraud_share: Annotated[float, Field(ge=0, le=1)] = 1 / 3
    card_fraud_multiplier: Annotated[float, Field(gt=0)] = 5.0
    # True (the handbook): nothing is compromised before day 0, so the fraud rate ramps up over the first
    # 28 days. False: compromise draws exist for days before 0 too, so the rate is stationary from day 0.
    fraud_warmup: bool = True
    # Weekly seasonality, absent from the handbook (1.0): customers' daily transaction rate is multiplied by
    # this on Saturdays and Sundays. The monitor's silence test uses e.g. 0.75 so its baselines must cope.
    weekend_activity: float = Field(default=1.0, gt=0)

    @field_validator("start_date")
    @classmethod
    def _parse_start_date(cls, value: str) -> str:
        """Reject dates pandas cannot read now rather than at the first generated day."""
        pd.Timestamp(value)
        return value

    @model_validator(mode="after")
    def _check_sizes(self) -> WorldConfig:
        """Compromise draws are without replacement, so they cannot exceed the population."""
        if self.compromised_terminals_per_day > self.terminals:
            raise ValueError("compromised_terminals_per_day exceeds terminals")
        if self.compromised_cards_per_day > self.customers:
            raise ValueError("compromised_cards_per_day exceeds customers")
        return self

    @property
    def start(self) -> pd.Timestamp:
        """Midnight of day 0."""
        return pd.Timestamp(self.start_date).normalize()


@dataclass(frozen=True)
class HourBatch:
    """One hour of a live stream: the transactions made in it and the labels that arrive in it.

    ``labels`` (transaction_id, is_fraud, label_time) are those of transactions whose timestamp plus
    ``label_delay_days`` falls in this hour, so ``label_time`` is always inside ``[start, start + 1h)``.
    """

    start: pd.Timestamp
    transactions: pd.DataFrame
    labels: pd.DataFrame


@dataclass(frozen=True)
class _DayArrays:
    """One or more days of transactions as plain arrays, sorted by time (cheap to concatenate)."""

    transaction_id: IntArray
    seconds: IntArray  # since midnight of day 0
    customer: IntArray
    terminal: IntArray
    amount: FloatArray
    scenario: npt.NDArray[np.int8]
    online: npt.NDArray[np.bool_]

    @staticmethod
    def empty() -> _DayArrays:
        """No transactions (keeps the dtypes, so an empty run has the same schema)."""
        i64 = np.zeros(0, dtype=np.int64)
        return _DayArrays(i64, i64, i64, i64, np.zeros(0), np.zeros(0, np.int8), np.zeros(0, np.bool_))

    @staticmethod
    def concat(parts: list[_DayArrays]) -> _DayArrays:
        """Stack days in order (each is sorted and days do not overlap, so the result is sorted)."""
        return _DayArrays(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in _DayArrays.__dataclass_fields__)
        )


def _rng(seed: int, stream: int, day: int = 0) -> np.random.Generator:
    """The random stream for (seed, purpose, day); days before 0 get their own keys (spawn keys are >= 0)."""
    key = (stream, 0, day) if day >= 0 else (stream, 1, -day)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _terminals_in_radius(
    cust_xy: FloatArray, term_xy: FloatArray, radius: float
) -> tuple[IntArray, IntArray]:
    """Each customer's terminals closer than ``radius``, as CSR (indptr, indices sorted by terminal).

    Customers are taken in x order, in chunks, and each chunk is compared only with the strip of
    terminals whose x is within ``radius`` of the chunk's x range: ~5x fewer distances than the full
    matrix, and memory stays bounded whatever the world size. The result does not depend on chunking.
    """
    n_cust = len(cust_xy)
    term_order = np.argsort(term_xy[:, 0], kind="stable")
    term_x_sorted = term_xy[term_order, 0]
    cust_order = np.argsort(cust_xy[:, 0], kind="stable")
    chunk = 256
    r2 = radius * radius
    owners: list[IntArray] = []
    found: list[IntArray] = []
    for lo in range(0, n_cust, chunk):
        members = cust_order[lo : lo + chunk]
        block = cust_xy[members]
        left, right = np.searchsorted(term_x_sorted, [block[:, 0].min() - radius, block[:, 0].max() + radius])
        strip = term_order[left:right]
        near = term_xy[strip]
        d2 = (block[:, 0, None] - near[None, :, 0]) ** 2 + (block[:, 1, None] - near[None, :, 1]) ** 2
        rows, cols = np.nonzero(d2 < r2)
        owners.append(members[rows].astype(np.int64))
        found.append(strip[cols].astype(np.int64))
    owner = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
    terminal = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    order = np.lexsort((terminal, owner))  # by customer, then terminal id: a canonical order
    indptr = np.zeros(n_cust + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=n_cust), out=indptr[1:])
    return indptr, terminal[order]


def _build_customers(config: WorldConfig) -> pd.DataFrame:
    """Customer profiles (handbook distributions), without their terminals."""
    rng = _rng(config.seed, _STREAM_CUSTOMERS)
    n = config.customers
    xy = rng.uniform(0, PLANE_SIZE, size=(n, 2))
    mean_amount = rng.uniform(5, 100, size=n)
    return pd.DataFrame(
        {
            C.CUSTOMER_ID: np.arange(n, dtype=np.int64),
            "x": xy[:, 0],
            "y": xy[:, 1],
            "mean_amount": mean_amount,
            "std_amount": mean_amount / 2,
            "mean_nb_tx_per_day": rng.uniform(0, 4, size=n),
        }
    )


def _merchant_profiles(config: WorldConfig) -> dict[str, npt.NDArray[np.object_]]:
    """Made-up merchant name, MCC and country per terminal, from their own stream."""
    rng = _rng(config.seed, _STREAM_MERCHANTS)
    n = config.terminals
    shares = np.array([share for _, share, _ in _MCC_TABLE])
    kind = rng.choice(len(_MCC_TABLE), size=n, p=shares / shares.sum())
    stem = rng.integers(0, len(_MERCHANT_STEMS), size=n)
    word = rng.integers(0, 1 << 30, size=n)
    names = np.array(
        [
            f"{_MERCHANT_STEMS[s]} {_MCC_TABLE[k][2][w % len(_MCC_TABLE[k][2])]}"
            for s, k, w in zip(stem, kind, word, strict=True)
        ],
        dtype=object,
    )
    mccs = np.array([_MCC_TABLE[k][0] for k in kind], dtype=object)
    foreign_codes = np.array([c for c, _ in _FOREIGN_COUNTRIES], dtype=object)
    foreign_p = np.array([w for _, w in _FOREIGN_COUNTRIES])
    foreign = rng.random(n) < config.foreign_terminal_share
    countries = np.full(n, config.home_country, dtype=object)
    countries[foreign] = rng.choice(foreign_codes, size=int(foreign.sum()), p=foreign_p / foreign_p.sum())
    return {C.MERCHANT_NAME: names, C.MCC: mccs, C.COUNTRY: countries}


def _build_terminals(config: WorldConfig) -> pd.DataFrame:
    """Terminal profiles: location (handbook) plus, with extensions, merchant name, MCC and country."""
    rng = _rng(config.seed, _STREAM_TERMINALS)
    xy = rng.uniform(0, PLANE_SIZE, size=(config.terminals, 2))
    frame = pd.DataFrame(
        {C.TERMINAL_ID: np.arange(config.terminals, dtype=np.int64), "x": xy[:, 0], "y": xy[:, 1]}
    )
    if config.extensions:
        for column, values in _merchant_profiles(config).items():
            frame[column] = pd.array(values, dtype="str")
    return frame


def _label_frame(frame: pd.DataFrame, delay: pd.Timedelta) -> pd.DataFrame:
    """The label rows of transactions: id, label, and the time the label becomes known."""
    return pd.DataFrame(
        {
            C.TRANSACTION_ID: frame[C.TRANSACTION_ID].to_numpy(),
            C.LABEL: frame[C.LABEL].to_numpy(),
            LABEL_TIME: (frame[C.TIMESTAMP] + delay).to_numpy(),
        }
    )


def _hour_slices(timestamps: pd.Series, day_start: pd.Timestamp) -> list[slice]:
    """Row ranges of each of the 24 hours of a day in a frame sorted by time."""
    edges = (day_start + pd.to_timedelta(np.arange(25) * SECONDS_PER_HOUR, unit="s")).to_numpy()
    bounds = np.searchsorted(timestamps.to_numpy(), edges, side="left")
    return [slice(int(bounds[h]), int(bounds[h + 1])) for h in range(24)]


class Simulator:
    """A deterministic world of customers and terminals that produces days of transactions."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        self.customers = _build_customers(self.config)
        self.terminals = _build_terminals(self.config)
        self._indptr, self._avail = _terminals_in_radius(
            self.customers[["x", "y"]].to_numpy(), self.terminals[["x", "y"]].to_numpy(), self.config.radius
        )
        self._n_avail = np.diff(self._indptr)
        self.customers["nb_terminals"] = self._n_avail
        self._mean_amount = self.customers["mean_amount"].to_numpy()
        self._mean_nb = self.customers["mean_nb_tx_per_day"].to_numpy()
        self._start_ns = self.config.start.as_unit("ns").to_datetime64()

    # ----------------------------------------------------------------- fraud state

    def compromised_terminals(self, day_index: int) -> IntArray:
        """Terminals whose transactions on ``day_index`` are fraud (scenario 2), sorted."""
        cfg = self.config
        return self._compromised(
            day_index, _STREAM_COMPROMISED_TERMINALS, cfg.terminals,
            cfg.compromised_terminals_per_day, cfg.terminal_compromise_days,
        )  # fmt: skip

    def compromised_customers(self, day_index: int) -> IntArray:
        """Customers whose card is compromised on ``day_index`` (scenario 3), sorted."""
        cfg = self.config
        return self._compromised(
            day_index, _STREAM_COMPROMISED_CARDS, cfg.customers,
            cfg.compromised_cards_per_day, cfg.card_compromise_days,
        )  # fmt: skip

    def _compromised(
        self, day_index: int, stream: int, population: int, per_day: int, duration: int
    ) -> IntArray:
        """Union of the draws of the ``duration`` days up to ``day_index`` (each draw depends on its day only)."""
        first = day_index - duration + 1
        if self.config.fraud_warmup:
            first = max(0, first)  # the handbook starts with nothing compromised
        draws = [
            _rng(self.config.seed, stream, d).choice(population, size=per_day, replace=False)
            for d in range(first, day_index + 1)
        ]
        if not draws or per_day == 0:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(draws)).astype(np.int64)

    # ----------------------------------------------------------------- transactions

    def _day_arrays(self, day_index: int) -> _DayArrays:
        """One day's transactions as arrays sorted by time, with fraud labels applied."""
        if day_index < 0:
            raise ValueError(f"day_index must be >= 0, got {day_index}")
        cfg = self.config
        rng = _rng(cfg.seed, _STREAM_DAY, day_index)
        # Every draw below is made for every candidate row whatever the fraud state, so the stream never
        # depends on state or config beyond the world itself.
        rate = self._mean_nb * (cfg.weekend_activity if self._is_weekend(day_index) else 1.0)
        n_tx = rng.poisson(rate)
        n_tx[self._n_avail == 0] = 0  # no terminal in range: no transactions
        customer = np.repeat(np.arange(cfg.customers, dtype=np.int64), n_tx)
        second = np.floor(rng.normal(_TIME_MEAN_S, _TIME_STD_S, size=customer.size)).astype(np.int64)
        inside = (second >= 0) & (second < SECONDS_PER_DAY)
        customer, second = customer[inside], second[inside]

        mean = self._mean_amount[customer]
        raw = rng.normal(mean, mean / 2)
        fallback = rng.uniform(0, 2 * mean)
        amount = np.round(np.where(raw < 0, fallback, raw), 2).astype(np.float64, copy=False)
        pick = (rng.random(customer.size) * self._n_avail[customer]).astype(np.int64)
        terminal = self._avail[self._indptr[customer] + pick]
        card_draw = rng.random(customer.size)

        order = np.argsort(second, kind="stable")
        customer, second, amount = customer[order], second[order], amount[order]
        terminal, card_draw = terminal[order], card_draw[order]

        scenario = np.zeros(customer.size, dtype=np.int8)
        scenario[amount > cfg.fraud_amount_threshold] = SCENARIO_AMOUNT
        scenario[np.isin(terminal, self.compromised_terminals(day_index))] = SCENARIO_TERMINAL
        card = np.isin(customer, self.compromised_customers(day_index)) & (card_draw < cfg.card_fraud_share)
        amount[card] = np.round(amount[card] * cfg.card_fraud_multiplier, 2)
        scenario[card] = SCENARIO_CARD

        online = _rng(cfg.seed, _STREAM_CHANNEL, day_index).random(customer.size) < cfg.online_share
        return _DayArrays(
            transaction_id=day_index * TX_ID_DAY_STRIDE + np.arange(customer.size, dtype=np.int64),
            seconds=day_index * SECONDS_PER_DAY + second,
            customer=customer,
            terminal=terminal,
            amount=amount,
            scenario=scenario,
            online=online,
        )

    def _frame(self, arrays: _DayArrays) -> pd.DataFrame:
        """The public frame (canonical columns and dtypes) for arrays of transactions."""
        frame = pd.DataFrame(
            {
                C.TRANSACTION_ID: arrays.transaction_id,
                C.TIMESTAMP: self._start_ns
                + arrays.seconds.astype("timedelta64[s]").astype("timedelta64[ns]"),
                C.CUSTOMER_ID: arrays.customer,
                C.TERMINAL_ID: arrays.terminal,
                C.AMOUNT: arrays.amount,
            }
        )
        if self.config.extensions:
            channel = np.where(arrays.online, C.CHANNELS[1], C.CHANNELS[0]).astype(object)
            frame[C.CHANNEL] = pd.array(channel, dtype="str")
            for column in (C.MERCHANT_NAME, C.MCC, C.COUNTRY):
                frame[column] = self.terminals[column].array.take(arrays.terminal)
        frame[C.LABEL] = (arrays.scenario > 0).astype(np.int8)
        frame[C.FRAUD_SCENARIO] = arrays.scenario
        return frame

    def _is_weekend(self, day_index: int) -> bool:
        return (pd.Timestamp(self.config.start_date) + pd.Timedelta(days=day_index)).day_of_week >= 5

    def day(self, day_index: int) -> pd.DataFrame:
        """One day's transactions, sorted by time; identical whichever run it is part of."""
        return self._frame(self._day_arrays(day_index))

    def generate(
        self, start_day: int, days: int, progress: Callable[[int], None] | None = None
    ) -> pd.DataFrame:
        """Days ``start_day .. start_day + days - 1``, sorted by timestamp.

        ``progress``, if given, is called after each day with the number of days done so far.
        """
        if days < 0:
            raise ValueError(f"days must be >= 0, got {days}")
        parts: list[_DayArrays] = []
        for done, d in enumerate(range(start_day, start_day + days), start=1):
            parts.append(self._day_arrays(d))
            if progress is not None:
                progress(done)
        return self._frame(_DayArrays.concat(parts) if parts else _DayArrays.empty())

    def stream_hours(self, start_day: int, days: int, prior_labels: bool = True) -> Iterator[HourBatch]:
        """Hour by hour, the transactions of ``days`` days from ``start_day`` and the labels arriving.

        Transactions carry no label columns. Labels arrive ``label_delay_days`` after their transaction;
        with ``prior_labels`` the labels of transactions made before ``start_day`` that arrive during the
        stream are included too (as a live system would receive them), otherwise only labels of streamed
        transactions. Days are generated lazily; at most ``label_delay_days + 1`` are held in memory.
        """
        delay_days = self.config.label_delay_days
        delay = pd.Timedelta(days=delay_days)
        held: dict[int, pd.DataFrame] = {}
        for d in range(start_day, start_day + days):
            held[d] = self.day(d)
            label_day = d - delay_days
            if label_day in held:
                source = held[label_day]
            elif prior_labels and label_day >= 0:
                source = self.day(label_day)
            else:
                source = held[d].iloc[0:0]
            labels = _label_frame(source, delay)
            day_start = self.config.start + pd.Timedelta(days=d)
            tx = held[d].drop(columns=list(LABEL_COLUMNS))
            held.pop(label_day, None)  # its labels are out: no later day needs its rows
            tx_hours = _hour_slices(tx[C.TIMESTAMP], day_start)
            label_hours = _hour_slices(labels[LABEL_TIME], day_start)
            for hour in range(24):
                yield HourBatch(
                    start=day_start + pd.Timedelta(hours=hour),
                    transactions=tx.iloc[tx_hours[hour]].reset_index(drop=True),
                    labels=labels.iloc[label_hours[hour]].reset_index(drop=True),
                )


def simulate(config: WorldConfig | None = None, days: int = 30, start_day: int = 0) -> pd.DataFrame:
    """Build a world from ``config`` and generate ``days`` days from ``start_day``."""
    return Simulator(config).generate(start_day, days)

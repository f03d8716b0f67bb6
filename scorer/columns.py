"""Canonical column names shared by the simulator, the scorer, the store and the monitor (DESIGN 5b).

Everything inside selfheal speaks these names. Files in the Fraud Detection Handbook format are mapped
onto them once, at the edge (`HANDBOOK_COLUMNS`), so no other module knows the handbook's spelling.
"""

from __future__ import annotations

from typing import Final

TRANSACTION_ID: Final = "transaction_id"
TIMESTAMP: Final = "timestamp"
CUSTOMER_ID: Final = "customer_id"
TERMINAL_ID: Final = "terminal_id"
AMOUNT: Final = "amount"
CHANNEL: Final = "channel"
MERCHANT_NAME: Final = "merchant_name"
MCC: Final = "mcc"
COUNTRY: Final = "country"
# The label: 1 fraud, 0 genuine. In feature inputs a missing value (NaN) means "not known yet".
LABEL: Final = "is_fraud"
# Which simulated fraud scenario produced a fraud (0 none, 1 amount, 2 terminal, 3 card); simulator only.
FRAUD_SCENARIO: Final = "fraud_scenario"

REQUIRED_INPUT_COLUMNS: Final = (TRANSACTION_ID, TIMESTAMP, CUSTOMER_ID, TERMINAL_ID, AMOUNT)
OPTIONAL_INPUT_COLUMNS: Final = (CHANNEL, MERCHANT_NAME, MCC, COUNTRY)
INPUT_COLUMNS: Final = REQUIRED_INPUT_COLUMNS + OPTIONAL_INPUT_COLUMNS

# Handbook file column -> canonical column.
HANDBOOK_COLUMNS: Final = {
    "TRANSACTION_ID": TRANSACTION_ID,
    "TX_DATETIME": TIMESTAMP,
    "CUSTOMER_ID": CUSTOMER_ID,
    "TERMINAL_ID": TERMINAL_ID,
    "TX_AMOUNT": AMOUNT,
    "TX_FRAUD": LABEL,
    "TX_FRAUD_SCENARIO": FRAUD_SCENARIO,
}

CHANNELS: Final = ("card_present", "online")

"""Versioned schema migrations for the workspace database.

Each migration is (version, description, SQL). `Store.migrate` applies the ones not yet recorded in
`schema_migrations`, in order, each in its own transaction. Never edit a released migration: add one.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Migration(NamedTuple):
    version: int
    description: str
    sql: str


# The column that orders each table in time: what `export --since/--until` filters on.
TIME_COLUMNS: dict[str, str] = {
    "transactions": "timestamp",
    "predictions": "timestamp",
    "labels": "label_time",
    "dead_letters": "received_at",
    "serving_state": "changed_at",
    "audit_log": "recorded_at",
    "models": "created_at",
    "model_aliases": "recorded_at",
    "monitor_counts": "window_start",
    "monitor_windows": "window_start",
    "monitor_findings": "window_start",
    "incidents": "opened_at",
    "incident_events": "recorded_at",
    "pages": "recorded_at",
    "agent_runs": "started_at",
    "chat_messages": "asked_at",
    "feature_history": "timestamp",
}

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "scoring logs, labels, dead letters, serving state, audit log, model registry",
        """
        CREATE TABLE transactions (
            transaction_id VARCHAR NOT NULL,
            timestamp TIMESTAMP NOT NULL,
            customer_id VARCHAR NOT NULL,
            terminal_id VARCHAR NOT NULL,
            amount DOUBLE NOT NULL,
            channel VARCHAR,
            merchant_name VARCHAR,
            mcc VARCHAR,
            country VARCHAR,
            batch_id VARCHAR NOT NULL,
            received_at TIMESTAMP NOT NULL
        );
        CREATE TABLE predictions (
            transaction_id VARCHAR NOT NULL,
            timestamp TIMESTAMP NOT NULL,
            scored_at TIMESTAMP NOT NULL,
            score DOUBLE NOT NULL,
            decision VARCHAR NOT NULL,
            model_version INTEGER,
            serving_state_version INTEGER NOT NULL,
            used_fallback BOOLEAN NOT NULL,
            fallback_reason VARCHAR,
            latency_ms DOUBLE NOT NULL,
            batch_id VARCHAR NOT NULL,
            amount DOUBLE,
            is_weekend DOUBLE,
            is_night DOUBLE,
            customer_tx_count_1d DOUBLE,
            customer_avg_amount_1d DOUBLE,
            customer_tx_count_7d DOUBLE,
            customer_avg_amount_7d DOUBLE,
            customer_tx_count_30d DOUBLE,
            customer_avg_amount_30d DOUBLE,
            terminal_tx_count_1d DOUBLE,
            terminal_risk_1d DOUBLE,
            terminal_tx_count_7d DOUBLE,
            terminal_risk_7d DOUBLE,
            terminal_tx_count_30d DOUBLE,
            terminal_risk_30d DOUBLE,
            is_online DOUBLE,
            is_high_risk_mcc DOUBLE
        );
        CREATE TABLE labels (
            transaction_id VARCHAR NOT NULL,
            is_fraud INTEGER NOT NULL,
            label_time TIMESTAMP NOT NULL,
            received_at TIMESTAMP NOT NULL
        );
        CREATE TABLE dead_letters (
            dead_letter_id VARCHAR NOT NULL,
            received_at TIMESTAMP NOT NULL,
            batch_id VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            transaction_id VARCHAR,
            reason VARCHAR NOT NULL,
            field VARCHAR,
            payload VARCHAR NOT NULL
        );
        CREATE TABLE serving_state (
            version INTEGER PRIMARY KEY,
            changed_at TIMESTAMP NOT NULL,
            changed_by VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            champion_version INTEGER,
            fallback BOOLEAN NOT NULL,
            fallback_reason VARCHAR,
            threshold DOUBLE NOT NULL,
            review_threshold DOUBLE NOT NULL,
            quarantined_features VARCHAR NOT NULL
        );
        CREATE TABLE audit_log (
            audit_id VARCHAR PRIMARY KEY,
            recorded_at TIMESTAMP NOT NULL,
            actor VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            incident_id VARCHAR,
            args VARCHAR NOT NULL,
            result VARCHAR NOT NULL,
            reason VARCHAR,
            approval VARCHAR,
            idempotency_key VARCHAR,
            inverse VARCHAR
        );
        CREATE TABLE models (
            version INTEGER PRIMARY KEY,
            created_at TIMESTAMP NOT NULL,
            artifact_path VARCHAR NOT NULL,
            sha256 VARCHAR NOT NULL,
            metadata VARCHAR NOT NULL
        );
        CREATE TABLE model_aliases (
            event_id INTEGER PRIMARY KEY,
            recorded_at TIMESTAMP NOT NULL,
            alias VARCHAR NOT NULL,
            version INTEGER,
            actor VARCHAR NOT NULL,
            reason VARCHAR NOT NULL
        );
        """,
    ),
    Migration(
        2,
        "monitor: additive window counts, findings, incidents and their timelines",
        """
        CREATE TABLE monitor_counts (
            window_start TIMESTAMP NOT NULL,
            window_end TIMESTAMP NOT NULL,
            model_version INTEGER,
            subject VARCHAR NOT NULL,
            rows BIGINT NOT NULL,
            nulls BIGINT NOT NULL,
            counts BIGINT[] NOT NULL
        );
        CREATE TABLE monitor_windows (
            window_start TIMESTAMP NOT NULL,
            window_end TIMESTAMP NOT NULL,
            cadence VARCHAR NOT NULL,
            model_version INTEGER,
            stats VARCHAR NOT NULL,
            evaluated_at TIMESTAMP NOT NULL
        );
        CREATE TABLE monitor_findings (
            window_start TIMESTAMP NOT NULL,
            window_end TIMESTAMP NOT NULL,
            cadence VARCHAR NOT NULL,
            check_name VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            subject VARCHAR NOT NULL,
            breached BOOLEAN NOT NULL,
            metric VARCHAR NOT NULL,
            value DOUBLE,
            threshold DOUBLE,
            evidence VARCHAR NOT NULL
        );
        CREATE TABLE incidents (
            incident_id VARCHAR PRIMARY KEY,
            number INTEGER NOT NULL,
            dedup_key VARCHAR NOT NULL,
            model_version INTEGER,
            kind VARCHAR NOT NULL,
            subject VARCHAR NOT NULL,
            severity VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            title VARCHAR NOT NULL,
            opened_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL,
            closed_at TIMESTAMP,
            first_breach_at TIMESTAMP NOT NULL,
            evidence VARCHAR NOT NULL,
            root_cause VARCHAR,
            summary VARCHAR
        );
        CREATE TABLE incident_events (
            incident_id VARCHAR NOT NULL,
            recorded_at TIMESTAMP NOT NULL,
            event VARCHAR NOT NULL,
            detail VARCHAR NOT NULL
        );
        """,
    ),
    Migration(
        3,
        "pager outbox: every page and every channel's delivery result",
        """
        CREATE TABLE pages (
            page_id VARCHAR NOT NULL,
            recorded_at TIMESTAMP NOT NULL,
            incident_id VARCHAR NOT NULL,
            dedup_key VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            severity VARCHAR NOT NULL,
            summary VARCHAR NOT NULL,
            payload VARCHAR NOT NULL,
            channel VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            attempts INTEGER NOT NULL,
            error VARCHAR
        );
        """,
    ),
    Migration(
        4,
        "predictions.model_ms: the model's own predict time per row, apart from the batch's latency",
        """
        ALTER TABLE predictions ADD COLUMN model_ms DOUBLE;
        """,
    ),
    Migration(
        5,
        "agent_runs: one row per investigation (thread), its status, outcome and final state",
        """
        CREATE TABLE agent_runs (
            thread_id VARCHAR PRIMARY KEY,
            incident_id VARCHAR NOT NULL,
            attempt INTEGER NOT NULL,
            planner VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            started_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL,
            outcome VARCHAR,
            root_cause VARCHAR,
            runbook_id VARCHAR,
            verified BOOLEAN,
            paged BOOLEAN,
            waiting JSON,
            state JSON
        );
        """,
    ),
    Migration(
        6,
        "chat_messages: the incident review conversations, one row per question and its answer",
        """
        CREATE TABLE chat_messages (
            incident_id VARCHAR NOT NULL,
            turn INTEGER NOT NULL,
            asked_at TIMESTAMP NOT NULL,
            actor VARCHAR NOT NULL,
            message VARCHAR NOT NULL,
            answer VARCHAR NOT NULL,
            mode VARCHAR NOT NULL,
            intent VARCHAR,
            facts JSON NOT NULL,
            sources JSON NOT NULL,
            actions JSON NOT NULL,
            PRIMARY KEY (incident_id, turn)
        );
        """,
    ),
    Migration(
        7,
        "serving_state.quarantine_surrogates: sibling features that estimate a quarantined feature",
        """
        ALTER TABLE serving_state ADD COLUMN quarantine_surrogates JSON DEFAULT '{}';
        """,
    ),
    Migration(
        8,
        "loaded_log_spills: set-aside log chunks loaded back (store.spill), so no file is loaded twice",
        """
        CREATE TABLE loaded_log_spills (
            sha256 VARCHAR PRIMARY KEY,
            file VARCHAR NOT NULL,
            rows BIGINT NOT NULL,
            loaded_at TIMESTAMP NOT NULL
        );
        """,
    ),
    Migration(
        9,
        "feature_history: transactions observed (never scored) that feature windows still reach (scorer.history)",
        # The columns `FeatureState.observe` keeps. transaction_id may be NULL: history without ids is still
        # counted in windows, it just cannot be labelled later. is_fraud NULL: the label was not known.
        """
        CREATE TABLE feature_history (
            transaction_id VARCHAR,
            timestamp TIMESTAMP NOT NULL,
            customer_id VARCHAR NOT NULL,
            terminal_id VARCHAR NOT NULL,
            amount DOUBLE NOT NULL,
            is_fraud INTEGER,
            observed_at TIMESTAMP NOT NULL
        );
        """,
    ),
)

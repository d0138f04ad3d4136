"""The PostgreSQL store's schema: versioned migrations, applied at start and by
``alertpilot migrate``. Append new steps; never edit a released one.

``alertpilot_schema`` holds one row per step applied. Every replica migrates at start:
the steps run in one transaction under a transaction-scoped advisory lock, so when two
start together one migrates and the other, once the lock is its own, finds nothing left
to do. Times are seconds since the epoch (``double precision``) and JSON is text, as in
the SQLite store, so that rows read the same on both (``bot.store.rows``).
"""

from __future__ import annotations

import logging

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from bot.errors import StoreError

log = logging.getLogger(__name__)

# pg_advisory_xact_lock's key for migrating (any 64-bit number no other code uses).
MIGRATION_LOCK = 0x616C657274_01  # "alert", 1

MIGRATIONS: list[str] = [
    # 1: the inbox, incidents, alerts, alert states, timeline, jobs (with lanes and
    # leases), key-value, events seen: the SQLite store's schema at its step 5.
    """
    CREATE TABLE inbox (
        id BIGSERIAL PRIMARY KEY,
        source TEXT NOT NULL,
        body TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        processed_at DOUBLE PRECISION,
        result TEXT
    );
    CREATE INDEX inbox_pending ON inbox(id) WHERE processed_at IS NULL;
    CREATE INDEX inbox_processed ON inbox(processed_at) WHERE processed_at IS NOT NULL;

    CREATE TABLE incidents (
        id BIGSERIAL PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        group_hash TEXT NOT NULL,
        receiver TEXT NOT NULL,
        group_key TEXT NOT NULL,
        status TEXT NOT NULL,
        severity TEXT NOT NULL,
        title TEXT NOT NULL,
        summary TEXT NOT NULL,
        group_labels TEXT NOT NULL,
        common_labels TEXT NOT NULL,
        common_annotations TEXT NOT NULL,
        external_url TEXT NOT NULL,
        opened_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        acknowledged_at DOUBLE PRECISION,
        acknowledged_by TEXT,
        resolved_at DOUBLE PRECISION,
        previous_id BIGINT REFERENCES incidents(id),
        playbook TEXT,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX incidents_group ON incidents(group_hash, id);
    CREATE INDEX incidents_status ON incidents(status, id);

    CREATE TABLE alerts (
        seq BIGSERIAL,
        incident_id BIGINT NOT NULL REFERENCES incidents(id),
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        starts_at TEXT NOT NULL,
        ends_at TEXT NOT NULL,
        generator_url TEXT NOT NULL,
        links TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (incident_id, fingerprint)
    );

    CREATE TABLE alert_states (
        group_hash TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        starts_at TEXT NOT NULL,
        incident_id BIGINT,
        seen_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (group_hash, fingerprint, status, starts_at)
    );

    CREATE TABLE events (
        id BIGSERIAL PRIMARY KEY,
        incident_id BIGINT NOT NULL REFERENCES incidents(id),
        at DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_incident ON events(incident_id, id);

    CREATE TABLE jobs (
        id BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL,
        key TEXT NOT NULL UNIQUE,
        incident_id BIGINT,
        payload TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'pending',
        due_at DOUBLE PRECISION NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        lane TEXT NOT NULL DEFAULT 'pipeline',
        priority INTEGER NOT NULL DEFAULT 2,
        lease_until DOUBLE PRECISION
    );
    CREATE INDEX jobs_due ON jobs(due_at) WHERE status = 'pending';
    CREATE INDEX jobs_open ON jobs(incident_id, kind, id) WHERE status IN ('pending', 'running');
    CREATE INDEX jobs_lane ON jobs(lane, priority, due_at, id) WHERE status = 'pending';
    CREATE INDEX jobs_leased ON jobs(lease_until) WHERE status = 'running';
    CREATE INDEX jobs_finished ON jobs(updated_at) WHERE status IN ('done', 'cancelled');

    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        expires_at DOUBLE PRECISION
    );

    CREATE TABLE seen_events (
        source TEXT NOT NULL,
        id TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        result TEXT NOT NULL,
        PRIMARY KEY (source, id)
    );
    CREATE INDEX seen_events_at ON seen_events(source, at);
    """,
    # 2: webhook payloads compressed with lz4 rather than pglz where the server has it
    # (PostgreSQL 14 and later, built with lz4, as Debian's is): a payload of a few KiB
    # is compressed as it is committed, while an ack waits, in a fraction of the time.
    """
    DO $$
    BEGIN
        EXECUTE 'ALTER TABLE inbox ALTER COLUMN body SET COMPRESSION lz4';
    EXCEPTION WHEN feature_not_supported OR syntax_error THEN
        RAISE NOTICE 'inbox bodies keep the default compression: %', SQLERRM;
    END
    $$;
    """,
]


async def migrate(conn: AsyncConnection[DictRow]) -> list[int]:
    """Bring the schema up to date in one transaction; return the steps applied (none when
    another replica got there first). Raise StoreError for a schema newer than this code."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS alertpilot_schema ("
            " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = await (
            await conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM alertpilot_schema")
        ).fetchone()
        version = int(row["v"]) if row is not None else 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the database's schema is at version {version}, newer than this"
                f" alertpilot's {len(MIGRATIONS)}: upgrade alertpilot"
            )
        applied = []
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            log.info("store: applying PostgreSQL migration %d", number)
            await conn.execute(script.encode())
            await conn.execute("INSERT INTO alertpilot_schema (version) VALUES (%s)", (number,))
            applied.append(number)
        return applied

"""Versioned schema migrations. Append new steps; never edit a released one.

``PRAGMA user_version`` holds the number of steps applied, in each file: the store's
database and the inbox's (``<db>-inbox``, attached as ``received``).
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: inbox, incidents, alerts, alert states, timeline, jobs, key-value
    """
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        body TEXT NOT NULL,
        received_at REAL NOT NULL,
        processed_at REAL,
        result TEXT
    );
    CREATE INDEX inbox_pending ON inbox(id) WHERE processed_at IS NULL;

    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
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
        opened_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        acknowledged_at REAL,
        acknowledged_by TEXT,
        resolved_at REAL,
        previous_id INTEGER REFERENCES incidents(id),
        playbook TEXT,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX incidents_group ON incidents(group_hash, id);
    CREATE INDEX incidents_status ON incidents(status, id);

    CREATE TABLE alerts (
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        starts_at TEXT NOT NULL,
        ends_at TEXT NOT NULL,
        generator_url TEXT NOT NULL,
        PRIMARY KEY (incident_id, fingerprint)
    );

    CREATE TABLE alert_states (
        group_hash TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        starts_at TEXT NOT NULL,
        incident_id INTEGER,
        seen_at REAL NOT NULL,
        PRIMARY KEY (group_hash, fingerprint, status, starts_at)
    );

    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_incident ON events(incident_id, id);

    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        key TEXT NOT NULL UNIQUE,
        incident_id INTEGER,
        payload TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'pending',
        due_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX jobs_due ON jobs(due_at) WHERE status = 'pending';
    CREATE INDEX jobs_open ON jobs(incident_id, kind, id) WHERE status IN ('pending', 'running');

    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        expires_at REAL
    );
    """,
    # 2: the inbox moved to a file of its own (INBOX_MIGRATIONS; its rows are copied there
    # before this step runs); what processing made of each payload is recorded here, in
    # the transaction that applied it.
    """
    DROP TABLE inbox;
    CREATE TABLE inbox_done (
        id INTEGER PRIMARY KEY,
        processed_at REAL NOT NULL,
        result TEXT NOT NULL
    );
    """,
    # 3: each job filed under the lane that runs it, with its incident's severity as its
    # priority (0 for P0 ... 3; 2 without an incident): a lane's claim walks its own
    # pending jobs, most severe and oldest first, and reads nothing else. Jobs written
    # before this step are filed again at start (``Store.route_jobs``).
    """
    ALTER TABLE jobs ADD COLUMN lane TEXT NOT NULL DEFAULT 'pipeline';
    ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 2;
    CREATE INDEX jobs_lane ON jobs(lane, priority, due_at, id) WHERE status = 'pending';
    """,
    # 4: an alert's links from its sender (Grafana: dashboard, panel, silence, image).
    """
    ALTER TABLE alerts ADD COLUMN links TEXT NOT NULL DEFAULT '{}';
    """,
    # 5: ids of events received from outside (PagerDuty's webhook event ids), each with the
    # time it counts from and what came of it: looked up by (source, id), forgotten by
    # (source, at) after the source's own retention, never by store.retention. The ids
    # kept in the key-value table until now move here, counted from when they were seen
    # (they expired 7 days after).
    """
    CREATE TABLE seen_events (
        source TEXT NOT NULL,
        id TEXT NOT NULL,
        at REAL NOT NULL,
        result TEXT NOT NULL,
        PRIMARY KEY (source, id)
    ) WITHOUT ROWID;
    CREATE INDEX seen_events_at ON seen_events(source, at);
    INSERT OR IGNORE INTO seen_events (source, id, at, result)
        SELECT 'pagerduty', substr(key, 19), expires_at - 604800.0, value FROM kv
        WHERE key GLOB 'pagerduty:webhook:?*' AND expires_at IS NOT NULL;
    DELETE FROM kv WHERE key GLOB 'pagerduty:webhook:*';
    """,
]

# The step of MIGRATIONS before which the inbox's rows are copied to its own file.
INBOX_MOVED = 2

INBOX_MIGRATIONS: list[str] = [
    # 1: payloads as received, appended by the inbox writer alone. A row stored as a
    # repeat has processed_at and result from the start; every other row is pending
    # until the store's inbox_done has its id.
    """
    CREATE TABLE received.inbox (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        body TEXT NOT NULL,
        received_at REAL NOT NULL,
        processed_at REAL,
        result TEXT
    );
    """,
]

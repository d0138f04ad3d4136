"""A crash after the ack loses nothing; SIGTERM drains and exits cleanly."""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
import time
from pathlib import Path

import aiohttp

from bot.core.clock import SystemClock
from bot.store.sqlite import SqliteStore
from conftest import make_settings, payload
from serving import ServeProcess


def group(i: int) -> dict[str, object]:
    body = copy.deepcopy(payload("captured-firing"))
    body["groupKey"] = f'{{}}:{{alertname="HighErrorRate", service="svc-{i}"}}'
    body["groupLabels"] = {"alertname": "HighErrorRate", "service": f"svc-{i}"}
    for alert in body["alerts"]:  # type: ignore[attr-defined]
        alert["labels"]["service"] = f"svc-{i}"
        alert["fingerprint"] = f"{i:08x}{alert['fingerprint'][8:]}"
    return body


async def post_all(url: str, bodies: list[dict[str, object]]) -> list[int]:
    async with aiohttp.ClientSession() as session:

        async def post(body: dict[str, object]) -> int:
            async with session.post(f"{url}/alertmanager", json=body) as resp:
                assert resp.status == 200, await resp.text()
                return int((await resp.json())["inbox_id"])

        return await asyncio.gather(*(post(body) for body in bodies))


def incidents_by_service(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT json_extract(group_labels, '$.service'), id FROM incidents")
        return dict(rows.fetchall())
    finally:
        conn.close()


async def test_sigkill_right_after_acks_loses_nothing(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path)
    try:
        await server.start()
        bodies = [group(i) for i in range(150)]
        acked = await post_all(server.url, bodies)
        await server.kill()  # no drain, no cleanup: the process is gone
        assert len(set(acked)) == 150
        conn = sqlite3.connect(f"{server.db}-inbox")  # the inbox's own file
        stored = conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
        conn.close()
        assert stored == 150  # every acknowledged payload was on disk

        await server.start()
        deadline = time.monotonic() + 60
        while len(found := incidents_by_service(server.db)) < 150:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert sorted(found) == sorted(f"svc-{i}" for i in range(150))
        # and a redelivery of everything after the restart changes nothing
        await post_all(server.url, bodies[:20])
        await asyncio.sleep(0.5)
        assert len(incidents_by_service(server.db)) == 150
    finally:
        await server.stop()


async def test_unprocessed_inbox_is_processed_on_start(tmp_path: Path) -> None:
    """Payloads committed but never processed (the crash window) are picked up at start."""
    settings = make_settings(tmp_path)
    store = SqliteStore(settings.store.sqlite_path, clock=SystemClock().now)
    await store.open()
    for i in range(3):
        await store.enqueue_payload("alertmanager", json.dumps(group(i)))
    await store.close()

    server = ServeProcess(tmp_path)
    server.config.write_text(
        server.config.read_text().replace(str(server.db), str(tmp_path / "alertpilot.db"))
    )
    try:
        await server.start()
        for _ in range(50):
            if len(incidents_by_service(tmp_path / "alertpilot.db")) == 3:
                break
            await asyncio.sleep(0.1)
        assert sorted(incidents_by_service(tmp_path / "alertpilot.db")) == [
            "svc-0",
            "svc-1",
            "svc-2",
        ]
    finally:
        await server.stop()


async def test_sigterm_drains_and_exits_cleanly(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path)
    try:
        await server.start()
        await post_all(server.url, [group(i) for i in range(30)])
        code = await server.terminate()
        assert code == 0, server.log.read_text()[-2000:]
        log = server.log.read_text()
        assert "draining workers" in log
        assert "Traceback" not in log
    finally:
        await server.stop()

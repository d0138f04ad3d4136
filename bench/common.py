"""Shared pieces of the benchmarks: processes on loopback ports, wrk, payloads, the store.

Every benchmark module exposes ``run(quick: bool) -> list[Row]``; a row has the keys
benchmark, measured, baseline, ratio, goal, met (``bench/run_all.py`` tabulates them).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = ROOT / "tests" / "fixtures" / "alertmanager" / "captured-firing.json"
TESTS = ROOT / "tests"  # the loopback fakes (tests/fakes) and tests/stack.py
if str(TESTS) not in sys.path:
    sys.path.append(str(TESTS))
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused

SHIPPED_CONFIG = ROOT / "configs" / "alertpilot.yaml"

Row = dict[str, Any]
Json = dict[str, Any]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not become healthy")


def _spawn(
    argv: list[str], log: Path, preexec: Callable[[], None] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=preexec,  # resource limits only, before exec
        )


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def process(argv: list[str], url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = _spawn(argv, log)
    try:
        wait_healthy(url, proc)
        yield proc
    finally:
        _terminate(proc)


def alertpilot_config(tmp: Path, port: int, **sections: Any) -> Path:
    """A config on a free port with a temp store, no playbooks, Prometheus and Alertmanager
    unreachable; ``sections`` replace whole sections."""
    config: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{port}"},
        "logging": {"level": "WARNING"},
        "store": {"url": f"sqlite:///{tmp}/alertpilot.db"},
        "prometheus": {"url": NOWHERE, "timeout": 1, "retries": 0},
        "alertmanager": {"url": NOWHERE, "timeout": 1},
        "playbooks": {"paths": []},
    }
    config.update(sections)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def shipped_playbooks() -> dict[str, Any]:
    """Config sections for the shipped playbooks (``playbooks/``), with the shipped
    config's ``diagnostics`` and ``remediation`` sections, which allow the URLs and
    commands those playbooks name."""
    shipped = yaml.safe_load(SHIPPED_CONFIG.read_text())
    return {
        "playbooks": {"paths": [str(ROOT / "playbooks")]},
        "diagnostics": shipped["diagnostics"],
        "remediation": shipped["remediation"],
    }


class Alertpilot:
    """``alertpilot serve`` as a process that can be started, killed and started again on
    the same config and store."""

    def __init__(self, tmp: Path, **sections: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = alertpilot_config(tmp, self.port, **sections)
        self.db = tmp / "alertpilot.db"
        self.log = tmp / "alertpilot.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("alertpilot is not running")
        return self.proc.pid

    def start(self, preexec: Callable[[], None] | None = None) -> None:
        """``preexec``: run in the child before alertpilot starts (resource limits)."""
        argv = [sys.executable, "-m", "bot.cli", "serve", "--config", str(self.config)]
        self.proc = _spawn(argv, self.log, preexec)
        self.starts += 1
        try:
            wait_healthy(self.url, self.proc)
        except RuntimeError as exc:
            self.kill()
            raise RuntimeError(f"{exc}; tail of {self.log}:\n{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc)

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def tracebacks(self) -> int:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text.count("Traceback (most recent call last)")


@contextlib.contextmanager
def alertpilot(tmp: Path, **sections: Any) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    server = Alertpilot(tmp, **sections)
    server.start()
    assert server.proc is not None
    try:
        yield server.url, server.proc
    finally:
        server.stop()


@contextlib.contextmanager
def running(server: Alertpilot) -> Iterator[Alertpilot]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def baseline(tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, str(ROOT / "bench" / "baseline_server.py"), str(port)]
    with process(argv, url, tmp / "baseline.log") as proc:
        yield url, proc


def rss_mb(pid: int) -> float:
    """Resident set size of a process and its children (the inbox writer), from
    /proc/PID/status, in MiB."""
    total = 0.0
    for one in [pid, *children(pid)]:
        for line in Path(f"/proc/{one}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
                break
        else:
            raise RuntimeError(f"no VmRSS for pid {one}")
    return total


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def wrk(url: str, body: bytes, *, connections: int, seconds: int, threads: int = 1) -> float:
    """Requests per second that ``wrk`` measured POSTing ``body``; non-2xx answers fail."""
    with tempfile.TemporaryDirectory() as tmp:
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body)
        script = Path(tmp) / "post.lua"
        script.write_text(
            'local f = io.open("' + str(body_file) + '", "rb")\n'
            "wrk.method = 'POST'\nwrk.body = f:read('*a')\nf:close()\n"
            "wrk.headers['Content-Type'] = 'application/json'\n"
        )
        return wrk_script(url, script, connections=connections, seconds=seconds, threads=threads)


def wrk_script(
    url: str, script: Path, *, connections: int, seconds: int, threads: int = 1
) -> float:
    """Requests per second that ``wrk`` measured running the Lua ``script``; non-2xx
    answers fail."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: run scripts/bench.sh (it installs Debian's wrk)")
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw error answers:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    return float(match.group(1))


def payload_bytes() -> bytes:
    return json.dumps(json.loads(PAYLOAD.read_text())).encode()


# -- payloads ------------------------------------------------------------------------


def group_payload(
    i: int,
    *,
    alertname: str = "HighErrorRate",
    severity: str = "critical",
    status: str = "firing",
    tag: str = "svc",
) -> Json:
    """The captured 3-alert payload as its own group ``{alertname, service="<tag>-<i>"}``:
    every ``i`` opens a distinct incident; the same ``i`` is the same group and alerts."""
    body: Json = json.loads(PAYLOAD.read_text())
    service = f"{tag}-{i}"
    body["groupKey"] = f'{{}}:{{alertname="{alertname}", service="{service}"}}'
    body["groupLabels"] = {"alertname": alertname, "service": service}
    body["commonLabels"] = {
        **body["commonLabels"],
        "alertname": alertname,
        "service": service,
        "severity": severity,
    }
    body["status"] = status
    for n, alert in enumerate(body["alerts"]):
        alert["labels"].update(alertname=alertname, service=service, severity=severity)
        alert["fingerprint"] = hashlib.sha256(f"{tag}:{i}:{n}".encode()).hexdigest()[:16]
        alert["status"] = status
        if status == "resolved":
            alert["endsAt"] = "2026-11-21T06:00:00Z"
    return body


def fingerprints(body: Json) -> list[str]:
    return [str(a["fingerprint"]) for a in body["alerts"]]


def resolved(body: Json) -> Json:
    """The same group with every alert resolved."""
    out = copy.deepcopy(body)
    out["status"] = "resolved"
    for alert in out["alerts"]:
        alert["status"] = "resolved"
        alert["endsAt"] = "2026-11-21T06:00:00Z"
    return out


async def post_webhook(session: aiohttp.ClientSession, url: str, body: Json) -> bool:
    """POST one Alertmanager payload; True when alertpilot acknowledged it (200)."""
    try:
        async with session.post(
            f"{url}/alertmanager", json=body, timeout=aiohttp.ClientTimeout(total=10)
        ) as resp:
            await resp.read()
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


# -- the store, read-only ------------------------------------------------------------


class StoreView:
    """Read-only queries on alertpilot's SQLite file while it runs (WAL) or after."""

    def __init__(self, db: Path) -> None:
        self.db = db

    def _query(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            # The inbox is a file of its own, written by the inbox writer.
            conn.execute("ATTACH DATABASE ? AS received", (f"file:{self.db}-inbox?mode=ro",))
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def incidents(self) -> list[Json]:
        rows = self._query(
            "SELECT id, key, status, severity, title, group_labels, data FROM incidents"
        )
        return [
            {
                "id": r["id"],
                "key": r["key"],
                "status": r["status"],
                "severity": r["severity"],
                "title": r["title"],
                "group_labels": json.loads(r["group_labels"]),
                "data": json.loads(r["data"]),
            }
            for r in rows
        ]

    def incident_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM incidents")[0][0])

    def fingerprints(self) -> set[str]:
        return {str(r[0]) for r in self._query("SELECT fingerprint FROM alerts")}

    def alert_labels(self) -> list[Json]:
        return [json.loads(r[0]) for r in self._query("SELECT labels FROM alerts")]

    def inbox_pending(self) -> int:
        return int(
            self._query(
                "SELECT COUNT(*) FROM received.inbox AS i WHERE i.processed_at IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM inbox_done AS d WHERE d.id = i.id)"
            )[0][0]
        )

    def jobs_due(self, within: float = 5.0, like: str = "%") -> int:
        """Jobs pending or running that are due within ``within`` seconds."""
        return int(
            self._query(
                "SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'running') "
                "AND due_at <= ? AND kind LIKE ?",
                time.time() + within,
                like,
            )[0][0]
        )

    def jobs_by_kind(self, *statuses: str, due_within: float | None = None) -> dict[str, int]:
        """Jobs by kind whose status is one of ``statuses`` (and, with ``due_within``, that
        are due within that many seconds)."""
        marks = ", ".join("?" for _ in statuses)
        sql = f"SELECT kind, COUNT(*) FROM jobs WHERE status IN ({marks})"
        args: list[Any] = list(statuses)
        if due_within is not None:
            sql += " AND due_at <= ?"
            args.append(time.time() + due_within)
        rows = self._query(sql + " GROUP BY kind ORDER BY kind", *args)
        return {str(r[0]): int(r[1]) for r in rows}

    def failed_jobs(self) -> dict[str, int]:
        rows = self._query("SELECT kind, COUNT(*) FROM jobs WHERE status = 'failed' GROUP BY kind")
        return {str(r[0]): int(r[1]) for r in rows}


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.5) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; bounded in both."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        with contextlib.suppress(sqlite3.OperationalError):
            if predicate():
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return False


class Backlog(Protocol):
    """What ``settle`` asks of a store: ``StoreView`` (SQLite), ``replicas.PgStoreView``."""

    def inbox_pending(self) -> int: ...

    def jobs_due(self, within: float = 5.0) -> int: ...


def settle(view: Backlog, *, timeout: float, quiet: int = 3, interval: float = 1.0) -> bool:
    """Wait until the inbox is empty and no job is due soon for ``quiet`` polls in a row."""
    calm = 0

    def calm_now() -> bool:
        nonlocal calm
        calm = calm + 1 if view.inbox_pending() == 0 and view.jobs_due() == 0 else 0
        return calm >= quiet

    return wait_until(calm_now, timeout=timeout, interval=interval)

"""Shared pieces of the benchmarks: processes on loopback ports, wrk, payloads."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = ROOT / "tests" / "fixtures" / "alertmanager" / "captured-firing.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
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


@contextlib.contextmanager
def process(argv: list[str], url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    try:
        wait_healthy(url, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def alertpilot_config(tmp: Path, port: int, **sections: Any) -> Path:
    config: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{port}"},
        "logging": {"level": "WARNING"},
        "store": {"url": f"sqlite:///{tmp}/alertpilot.db"},
        "playbooks": {"paths": []},
    }
    config.update(sections)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def alertpilot(tmp: Path, **sections: Any) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    config = alertpilot_config(tmp, port, **sections)
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "bot.cli", "serve", "--config", str(config)]
    with process(argv, url, tmp / "alertpilot.log") as proc:
        yield url, proc


@contextlib.contextmanager
def baseline(tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, str(ROOT / "bench" / "baseline_server.py"), str(port)]
    with process(argv, url, tmp / "baseline.log") as proc:
        yield url, proc


def wrk(url: str, body: bytes, *, connections: int, seconds: int, threads: int = 1) -> float:
    """Requests per second that ``wrk`` measured POSTing ``body``; non-2xx answers fail."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: run scripts/bench.sh (it installs Debian's wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body)
        script = Path(tmp) / "post.lua"
        script.write_text(
            'local f = io.open("' + str(body_file) + '", "rb")\n'
            "wrk.method = 'POST'\nwrk.body = f:read('*a')\nf:close()\n"
            "wrk.headers['Content-Type'] = 'application/json'\n"
        )
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

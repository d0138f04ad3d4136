"""Real Prometheus / Alertmanager processes (plus a tiny metrics exporter) on
loopback for integration tests. Everything is an async context manager::

    @pytest.fixture
    async def alertmanager(tmp_path, webhook):
        async with Alertmanager(tmp_path, webhook.url) as am:
            yield am

A missing binary is an error, never a skip: run ``scripts/install-test-deps.sh``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import aiohttp
import yaml
from aiohttp import web

ALERTMANAGER_BIN = Path("/usr/bin/prometheus-alertmanager")
PROMETHEUS_BIN = Path("/usr/bin/prometheus")
READY_TIMEOUT = 20.0

Json = dict[str, Any]
Kind = Literal["gauge", "counter"]
LabelKey = tuple[tuple[str, str], ...]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(path: str | os.PathLike[str]) -> None:
    """Fail loudly (not skip) when an integration-test binary is missing."""
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            f"{path} is missing or not executable: integration tests need the real binaries, "
            "run scripts/install-test-deps.sh"
        )


def rfc3339(moment: datetime | None = None) -> str:
    """UTC timestamp in the RFC 3339 form the Alertmanager API uses."""
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Service:
    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class _Process(_Service):
    """A binary on 127.0.0.1:<free port> with a YAML config and log in its own work dir."""

    name = "process"
    binary = Path("/bin/false")

    def __init__(self, tmp_dir: Path, external_url: str | None = None) -> None:
        self.external_url = external_url  # for links in payloads; defaults to ``url``
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=tmp_dir))
        self.config_path = self.work_dir / f"{self.name}.yml"
        self.log_path = self.work_dir / f"{self.name}.log"
        self.config: Json = {}
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None

    def _args(self) -> list[str]:
        """Flags beyond --config.file, --web.listen-address and --log.level."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def start(self) -> None:
        require_binary(self.binary)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            for _ in range(3):  # free_port() is racy: retry when the port got taken meanwhile
                self.port = free_port()
                with self.log_path.open("ab") as log:
                    self._proc = await asyncio.create_subprocess_exec(
                        str(self.binary),
                        f"--config.file={self.config_path}",
                        f"--web.listen-address=127.0.0.1:{self.port}",
                        f"--web.external-url={self.external_url or self.url}",
                        "--log.level=warn",
                        *self._args(),
                        stdout=log,
                        stderr=log,
                    )
                if await self._wait_ready():
                    return
                code = await self._terminate()
                if "address already in use" not in self.log_tail():
                    break
            raise RuntimeError(
                f"{self.name} not ready on {self.url} within {READY_TIMEOUT:.0f}s (exit code "
                f"{code}); tail of {self.log_path}:\n{self.log_tail()}"
            )
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self) -> bool:
        """True once ``/-/ready`` answers 200; False if the process exits or time runs out."""
        assert self._proc is not None and self._session is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and self._proc.returncode is None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._session.get(f"{self.url}/-/ready") as resp:
                    if resp.status == 200:
                        return True
            await asyncio.sleep(0.1)
        return False

    async def _terminate(self) -> int | None:
        """SIGTERM, SIGKILL after 10 s; returns the exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            return await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            return await proc.wait()

    async def stop(self) -> None:
        await self._terminate()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._session is None:
            raise RuntimeError(f"{self.name} is not started")
        async with self._session.request(method, f"{self.url}{path}", **kwargs) as resp:
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path} -> {resp.status}: {await resp.text()}")
            return await resp.json() if resp.content_type == "application/json" else None


class Alertmanager(_Process):
    """``prometheus-alertmanager`` routing every alert to one webhook receiver named "bot"
    (with one webhook per URL when given several, as for two alertpilot replicas).

    ``cluster_port`` and ``peers`` make it one member of an HA pair: it gossips with the
    Alertmanagers listening on ``peers``. ``peer_timeout`` is how long the second member
    waits to see the first one's notification before sending its own; Alertmanager's
    default is 15 s, and at ``0s`` both members send every group, as a pair does whose
    gossip is slow or cut."""

    name = "alertmanager"
    binary = ALERTMANAGER_BIN

    def __init__(
        self,
        tmp_dir: Path,
        webhook_url: str | Sequence[str],
        *,
        group_by: Sequence[str] = ("alertname", "service"),
        group_wait: str = "0s",
        group_interval: str = "1s",
        repeat_interval: str = "1h",
        send_resolved: bool = True,
        http_config: Mapping[str, Any] | None = None,
        external_url: str | None = None,
        cluster_port: int | None = None,
        peers: Sequence[int] = (),
        peer_timeout: str = "15s",
    ) -> None:
        super().__init__(tmp_dir, external_url)
        urls = [webhook_url] if isinstance(webhook_url, str) else list(webhook_url)
        webhooks: list[Json] = []
        for url in urls:
            webhook: Json = {"url": url, "send_resolved": send_resolved, "max_alerts": 0}
            if http_config:
                webhook["http_config"] = dict(http_config)
            webhooks.append(webhook)
        self.cluster_port, self.peers, self.peer_timeout = cluster_port, peers, peer_timeout
        self.config = {
            "route": {
                "receiver": "bot",
                "group_by": list(group_by),
                "group_wait": group_wait,
                "group_interval": group_interval,
                "repeat_interval": repeat_interval,
            },
            "receivers": [{"name": "bot", "webhook_configs": webhooks}],
        }

    def _args(self) -> list[str]:
        args = [f"--storage.path={self.work_dir / 'data'}"]
        if self.cluster_port is None:
            return [*args, "--cluster.listen-address="]
        address = f"127.0.0.1:{self.cluster_port}"
        return [
            *args,
            f"--cluster.listen-address={address}",
            f"--cluster.advertise-address={address}",
            f"--cluster.peer-timeout={self.peer_timeout}",
            "--cluster.settle-timeout=2s",
            *(f"--cluster.peer=127.0.0.1:{port}" for port in self.peers),
        ]

    async def post_alerts(self, alerts: Iterable[Mapping[str, Any]], **overrides: Any) -> None:
        """POST /api/v2/alerts. Alert keys: labels, annotations, startsAt, endsAt, generatorURL
        (timestamps as RFC 3339 strings or datetimes); ``overrides`` apply to every alert."""
        body = []
        for alert in alerts:
            item = {"annotations": {}, **alert, **overrides}
            body.append({k: rfc3339(v) if isinstance(v, datetime) else v for k, v in item.items()})
        await self._request("POST", "/api/v2/alerts", json=body)

    async def resolve_alerts(self, alerts: Iterable[Mapping[str, Any]]) -> None:
        """Re-post ``alerts`` with ``endsAt`` = now, which resolves them."""
        await self.post_alerts(alerts, endsAt=rfc3339())

    async def alerts(self, *matchers: str, active: bool = True) -> list[Json]:
        """GET /api/v2/alerts filtered by matchers, e.g. ``alerts('alertname="X"')``."""
        params = [("filter", m) for m in matchers] + [("active", str(active).lower())]
        result: list[Json] = await self._request("GET", "/api/v2/alerts", params=params)
        return result

    async def silences(self) -> list[Json]:
        result: list[Json] = await self._request("GET", "/api/v2/silences")
        return result


class Prometheus(_Process):
    """``prometheus`` scraping ``scrape_targets`` as job "app", evaluating ``rule_files`` and
    sending alerts to ``alertmanager_url``."""

    name = "prometheus"
    binary = PROMETHEUS_BIN

    def __init__(
        self,
        tmp_dir: Path,
        *,
        scrape_targets: Sequence[str] = (),
        rule_files: Sequence[Path] = (),
        alertmanager_url: str | None = None,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        external_url: str | None = None,
    ) -> None:
        super().__init__(tmp_dir, external_url)
        self.config = {
            "global": {
                "scrape_interval": scrape_interval,
                "evaluation_interval": evaluation_interval,
            },
            "rule_files": [str(Path(f).resolve()) for f in rule_files],
            "scrape_configs": [
                {"job_name": "app", "static_configs": [{"targets": [*scrape_targets]}]}
            ],
        }
        if alertmanager_url:
            url = urlsplit(alertmanager_url)  # Prometheus wants host:port + scheme/path_prefix
            am: Json = {
                "scheme": url.scheme or "http",
                "static_configs": [{"targets": [url.netloc]}],
            }
            if url.path.strip("/"):
                am["path_prefix"] = url.path
            self.config["alerting"] = {"alertmanagers": [am]}

    def _args(self) -> list[str]:
        data = self.work_dir / "data"
        return [
            f"--storage.tsdb.path={data}",
            "--rules.alert.resend-delay=1s",
            "--web.enable-lifecycle",
        ]

    async def query(self, promql: str) -> Json:
        """Instant query; returns the API's ``data``: {"resultType": ..., "result": [...]}."""
        body: Json = await self._request("GET", "/api/v1/query", params={"query": promql})
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        data: Json = body["data"]
        return data

    async def value(self, promql: str) -> float | None:
        """The first sample's value of an instant query (None if the result is empty)."""
        data = await self.query(promql)
        result = data["result"]
        if data["resultType"] == "scalar":
            return float(result[1])
        return float(result[0]["value"][1]) if result else None

    async def wait_for(
        self,
        promql: str,
        predicate: Callable[[Json], bool],
        timeout: float = 30.0,
    ) -> Json:
        """Poll ``query(promql)`` until ``predicate(data)`` holds; returns that data."""
        deadline = time.monotonic() + timeout
        while not predicate(data := await self.query(promql)):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{promql!r} not as expected within {timeout}s; last: {data}")
            await asyncio.sleep(0.2)
        return data

    async def alerts(self) -> list[Json]:
        """GET /api/v1/alerts: alerts pending/firing in Prometheus itself."""
        body: Json = await self._request("GET", "/api/v1/alerts")
        result: list[Json] = body["data"]["alerts"]
        return result


class LoopbackApp(_Service):
    """An aiohttp ``app`` served on 127.0.0.1:<ephemeral port> (base for fake HTTP services)."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def _key(labels: Mapping[str, str] | None) -> LabelKey:
    return tuple(sorted((k, str(v)) for k, v in (labels or {}).items()))


def _series(name: str, labels: LabelKey, value: float) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    label_str = ",".join(f'{k}="{esc(v)}"' for k, v in labels)
    number = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}.get(repr(value), repr(value))
    return f"{name}{{{label_str}}} {number}" if labels else f"{name} {number}"


class MetricsExporter(LoopbackApp):
    """Serves ``/metrics`` (text exposition format 0.0.4) from values the test sets."""

    def __init__(self) -> None:
        super().__init__()
        self._kinds: dict[str, Kind] = {}
        self._values: dict[str, dict[LabelKey, float]] = {}
        self.app.router.add_get("/metrics", self._metrics)

    def set(
        self,
        name: str,
        value: float,
        labels: Mapping[str, str] | None = None,
        kind: Kind = "gauge",
    ) -> None:
        if self._kinds.setdefault(name, kind) != kind:
            raise ValueError(f"{name} is a {self._kinds[name]}, not a {kind}")
        self._values.setdefault(name, {})[_key(labels)] = float(value)

    def inc(self, name: str, amount: float = 1.0, labels: Mapping[str, str] | None = None) -> None:
        """Add ``amount`` to a series; a new metric becomes a counter."""
        current = self._values.get(name, {}).get(_key(labels), 0.0)
        self.set(name, current + amount, labels, self._kinds.get(name, "counter"))

    def render(self) -> str:
        lines: list[str] = []
        for name, series in self._values.items():
            lines.append(f"# TYPE {name} {self._kinds[name]}")
            lines += [_series(name, labels, value) for labels, value in series.items()]
        return "".join(line + "\n" for line in lines)

    async def _metrics(self, _request: web.Request) -> web.Response:
        content_type = "text/plain; version=0.0.4; charset=utf-8"
        return web.Response(body=self.render().encode(), headers={"Content-Type": content_type})

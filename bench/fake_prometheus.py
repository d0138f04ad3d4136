"""A healthy Prometheus without data, and an Alertmanager without alerts, on one loopback port.

Every instant query (``/api/v1/query``) is answered at once with an empty vector, every
range query (``/api/v1/query_range``) with an empty matrix, and Alertmanager's alert list
(``/api/v2/alerts``) with an empty list: the diagnostics of the shipped playbooks run
against an upstream that answers at once and finds nothing. ``GET /-/stats`` counts what
was asked. It runs as a process of its own, so its answers never wait for the benchmark's
own work:

    with fake_prometheus(tmp) as url:
        ...  # prometheus: {"url": url}, alertmanager: {"url": url}
        answered(url)  # {"query": 120, "query_range": 30, "alerts": 30}
"""

from __future__ import annotations

import contextlib
import json
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web
from common import ROOT, free_port, process

EMPTY_VECTOR = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
EMPTY_MATRIX = b'{"status":"success","data":{"resultType":"matrix","result":[]}}'
NO_ALERTS = b"[]"


@contextlib.contextmanager
def fake_prometheus(tmp: Path) -> Iterator[str]:
    """Yield ``http://127.0.0.1:PORT`` of a running fake; stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, str(ROOT / "bench" / "fake_prometheus.py"), str(port)]
    with process(argv, url, tmp / "fake-prometheus.log"):
        yield url


def answered(url: str) -> dict[str, int]:
    """How many instant queries, range queries and alert lists the fake has answered."""
    with urllib.request.urlopen(f"{url}/-/stats", timeout=5) as resp:
        counts: dict[str, int] = json.loads(resp.read())
    return counts


def make_app() -> web.Application:
    counts: Counter[str] = Counter()

    def answer(name: str, body: bytes) -> web.Response:
        counts[name] += 1
        return web.Response(body=body, content_type="application/json")

    async def query(request: web.Request) -> web.Response:
        return answer("query", EMPTY_VECTOR)

    async def query_range(request: web.Request) -> web.Response:
        return answer("query_range", EMPTY_MATRIX)

    async def alerts(request: web.Request) -> web.Response:
        return answer("alerts", NO_ALERTS)

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {name: counts[name] for name in ("query", "query_range", "alerts")}
        )

    app = web.Application()
    for method in ("GET", "POST"):
        app.router.add_route(method, "/api/v1/query", query)
        app.router.add_route(method, "/api/v1/query_range", query_range)
    app.router.add_get("/api/v2/alerts", alerts)
    for path in ("/healthz", "/-/healthy", "/-/ready"):
        app.router.add_get(path, ok)
    app.router.add_get("/-/stats", stats)
    return app


def main() -> None:
    web.run_app(make_app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()

"""The baseline for ingest benchmarks: a bare aiohttp handler that parses the JSON and says 200."""

from __future__ import annotations

import json
import sys

from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    body = await request.read()
    json.loads(body)
    return web.json_response({"status": "accepted"})


def main() -> None:
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_post("/alertmanager", handle)
    app.router.add_get("/healthz", lambda request: web.json_response({"status": "ok"}))
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()

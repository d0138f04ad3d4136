"""A server that accepts connections and never answers: Slack, PagerDuty, the LLM and
Prometheus all hanging at once."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from common import free_port


@contextlib.contextmanager
def hanging_server() -> Iterator[str]:
    """Yield ``http://127.0.0.1:PORT``; every request to it waits forever."""
    port = free_port()
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        # cancelled when the server stops: end quietly, with the connection closed
        with contextlib.suppress(Exception, asyncio.CancelledError):
            while await reader.read(65536):
                pass
        writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(hold, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    def run() -> None:
        asyncio.set_event_loop(loop)
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(serve())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for task in asyncio.all_tasks(loop):
            loop.call_soon_threadsafe(task.cancel)
        thread.join(5)

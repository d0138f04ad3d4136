"""Run ``alertpilot serve`` as a real process, for crash and shutdown tests."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from stack import free_port

STARTUP_TIMEOUT = 60.0  # s


class ServeProcess:
    def __init__(
        self,
        tmp: Path,
        extra: dict[str, Any] | None = None,
        open_files: tuple[int, int] | None = None,
    ) -> None:
        """``open_files``: the (soft, hard) limit on open files the process starts with."""
        self.open_files = open_files
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "alertpilot.db"
        self.log = tmp / "serve.log"
        config = {
            "server": {"listen": f"127.0.0.1:{self.port}"},
            "store": {"url": f"sqlite:///{self.db}"},
            "prometheus": {"url": "http://127.0.0.1:9", "timeout": 1},
            "alertmanager": {"url": "http://127.0.0.1:9", "timeout": 1},
            "playbooks": {"paths": []},
            "workers": {"poll_interval": 0.2},
        }
        for name, section in (extra or {}).items():  # sections are merged, not replaced
            config[name] = {**config.get(name, {}), **section}
        self.config = tmp / "config.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "serve", "--config", str(self.config),
                stdout=log, stderr=log, env=env, preexec_fn=self._limits,
            )  # fmt: skip
        # Generous: on a loaded machine the imports alone can take many seconds.
        deadline = time.monotonic() + STARTUP_TIMEOUT
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                try:
                    async with session.get(f"{self.url}/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if self.proc.returncode is not None:
                    break
                await asyncio.sleep(0.05)
        raise RuntimeError(f"alertpilot serve did not start:\n{self.log.read_text()[-3000:]}")

    def _limits(self) -> None:
        if self.open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, self.open_files)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 20)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

"""``command``: an argv list run with no shell.

``argv[0]`` is a literal on ``remediation.allowed_commands`` (an absolute path, or a bare
name looked up on a fixed ``PATH``). Literal arguments pass untouched; each templated
argument is rendered and must match its own pattern completely (``re.fullmatch``), else
nothing starts. The process gets no stdin, a minimal environment, ``/`` as its working
directory and its own process group, which is killed when the timeout passes. Output is
read as it comes and only the first ``max_output`` bytes of each stream are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from typing import Literal

from bot.core import regex
from bot.playbook import allowlist
from bot.playbook.model import CommandAction
from bot.remediation.actions.base import ActionContext, ActionKind, Call, Connections
from bot.remediation.results import Guard, Refused, StepResult, StepStatus, truncate

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENVIRONMENT = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/"}
_CHUNK = 64 * 1024
_DRAIN_GRACE = 2.0


class CommandCall(Call):
    kind: Literal["command"] = "command"
    argv: list[str]
    timeout: float
    max_output: int

    def describe(self) -> str:
        return " ".join(_shown(arg) for arg in self.argv)


def _shown(arg: str) -> str:
    """An argument as a person reads it: quoted when it is not a plain word."""
    return arg if re.fullmatch(r"[\w@%+=:,./-]+", arg) else repr(arg)


class CommandKind(ActionKind[CommandAction, CommandCall]):
    kind = "command"

    def __init__(self, allowed_commands: list[str]) -> None:
        self.allowed_commands = list(allowed_commands)

    def prepare(self, spec: CommandAction, ctx: ActionContext) -> CommandCall:
        executable = spec.argv[0]
        if not isinstance(executable, str) or not allowlist.command_allowed(
            executable, self.allowed_commands
        ):
            raise Refused(
                Guard.ALLOWLIST,
                f"executable {executable!r} is not on remediation.allowed_commands",
            )
        argv = [executable]
        for i, arg in enumerate(spec.argv[1:], start=1):
            if isinstance(arg, str):
                argv.append(arg)
                continue
            value = ctx.render(arg.template, f"argv[{i}]")
            if "\x00" in value or not regex.compile(arg.pattern).fullmatch(value):
                raise Refused(
                    Guard.PATTERN,
                    f"argv[{i}] = {truncate(value, 120)!r} does not match its pattern "
                    f"{arg.pattern!r}; nothing was run",
                )
            argv.append(value)
        return CommandCall(argv=argv, timeout=spec.timeout, max_output=spec.max_output)

    async def _execute(self, call: CommandCall, conns: Connections) -> StepResult:
        if not allowlist.command_allowed(call.argv[0], self.allowed_commands):
            return StepResult(status=StepStatus.ERROR, summary="executable not allowed")
        path = _resolve(call.argv[0])
        if path is None:
            return StepResult(
                status=StepStatus.ERROR, summary=f"{call.argv[0]}: not found or not executable"
            )
        try:
            proc = await asyncio.create_subprocess_exec(
                path,
                *call.argv[1:],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=ENVIRONMENT,
                cwd="/",
                start_new_session=True,
            )
        except OSError as exc:
            return StepResult(status=StepStatus.ERROR, summary=f"{call.argv[0]}: {exc.strerror}")
        assert proc.stdout is not None and proc.stderr is not None
        stdout, stderr = _Capture(call.max_output), _Capture(call.max_output)
        readers = [
            asyncio.create_task(stdout.read(proc.stdout)),
            asyncio.create_task(stderr.read(proc.stderr)),
        ]
        timed_out = False
        try:
            try:
                await asyncio.wait_for(proc.wait(), call.timeout)
            except TimeoutError:
                timed_out = True
                _kill_group(proc)
                await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled (shutdown): the command must not outlive us
                _kill_group(proc)
                with contextlib.suppress(ProcessLookupError):
                    await asyncio.shield(proc.wait())
            _, late = await asyncio.wait(readers, timeout=_DRAIN_GRACE)
            for task in late:  # a grandchild that left the process group holds the pipe
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        output = stdout.text()
        if stderr.size:
            output += ("\n" if output else "") + "[stderr]\n" + stderr.text()
        code = proc.returncode
        if timed_out:
            return StepResult(
                status=StepStatus.TIMED_OUT,
                summary=f"{call.describe()}: killed after {call.timeout:g}s",
                output=output,
                exit_code=code,
            )
        return StepResult(
            status=StepStatus.OK if code == 0 else StepStatus.FAILED,
            summary=f"{call.describe()}: exit status {code}",
            output=output,
            exit_code=code,
        )


def _resolve(executable: str) -> str | None:
    if "/" in executable:
        ok = os.path.isabs(executable) and os.path.isfile(executable)
        return executable if ok and os.access(executable, os.X_OK) else None
    return shutil.which(executable, path=SAFE_PATH)


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


class _Capture:
    """Keeps the first ``limit`` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.size = 0

    async def read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_CHUNK):
            self.size += len(chunk)
            room = self.limit - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]

    def text(self) -> str:
        text = self.kept.decode("utf-8", "replace")
        dropped = self.size - len(self.kept)
        return f"{text}… [{dropped} more bytes]" if dropped > 0 else text

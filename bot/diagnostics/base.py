"""The base of every diagnostic step: ``invoke()`` does timing, the timeout, logging and
the expectation; each kind writes ``_invoke()`` and returns an ``Outcome``.

A step never raises: a template that does not render, Prometheus refusing the query
(``bad_data``, not retried), Prometheus or Alertmanager down, a URL off the allowlist,
a timeout or a bug all come back as an ``error`` result (not checked) that says which,
with its cause (timeout, unreachable, error) and the upstream it waited for.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import aiohttp
from jinja2.sandbox import SandboxedEnvironment

from bot.core.clock import Clock
from bot.diagnostics.judge import Outcome, judge
from bot.diagnostics.result import DiagnosticResult, NotChecked
from bot.errors import AlertpilotError
from bot.playbook.model import DiagnosticBase
from bot.playbook.templating import NotApplicable, RenderError, render
from bot.upstream.alertmanager import AlertmanagerClient, AlertmanagerError
from bot.upstream.breaker import Breakers
from bot.upstream.http import HttpError
from bot.upstream.prometheus import PrometheusClient, PrometheusError

log = logging.getLogger(__name__)

SpecT = TypeVar("SpecT", bound=DiagnosticBase)


class StepError(AlertpilotError):
    """A step cannot produce an answer; the message becomes the result's error."""


@dataclass(frozen=True)
class Sources:
    """Where diagnostics read from; passed in so tests can point them anywhere."""

    prometheus: PrometheusClient
    alertmanager: AlertmanagerClient
    http: aiohttp.ClientSession
    allowed_urls: tuple[str, ...]
    clock: Clock
    env: SandboxedEnvironment
    breakers: Breakers | None = None  # one per HTTP target of ``http`` steps


@dataclass(frozen=True)
class StepInput:
    playbook: str
    context: Mapping[str, Any]  # the template context of the incident
    own_fingerprints: frozenset[str] = frozenset()  # the incident's alerts, not "related"


# The step's own timeout fires this long after the client's, so that the client sees its
# timeout (and counts it on the upstream's breaker) rather than being cancelled.
GRACE = 0.5


class DiagnosticStep(abc.ABC, Generic[SpecT]):
    kind: ClassVar[str]
    upstream: ClassVar[str]  # whose answer the step waits for

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def render(self, template: str, step: StepInput) -> str:
        return render(self.sources.env, template, step.context)

    async def invoke(self, spec: SpecT, step: StepInput) -> DiagnosticResult:
        clock = self.sources.clock
        started = clock.monotonic()
        try:
            async with asyncio.timeout(spec.timeout + GRACE):
                outcome = await self._invoke(spec, step)
        except TimeoutError:
            outcome = Outcome.failed(
                f"timed out after {spec.timeout:g}s",
                cause=NotChecked.TIMEOUT,
                upstream=self.upstream,
            )
        except (PrometheusError, AlertmanagerError, HttpError) as exc:
            outcome = Outcome.failed(str(exc), cause=exc.cause, upstream=self.upstream)
        except NotApplicable as exc:
            outcome = Outcome.failed(str(exc), cause=NotChecked.NOT_APPLICABLE)
        except (StepError, RenderError) as exc:
            outcome = Outcome.failed(str(exc))
        except Exception as exc:  # a bug in one step must not sink the others; it is logged
            log.exception("diagnostic %s/%s crashed", step.playbook, spec.name)
            outcome = Outcome.failed(f"internal error: {type(exc).__name__}")
        elapsed = clock.monotonic() - started
        result = judge(spec, step.playbook, self.kind, outcome, elapsed)
        log.info(
            "diagnostic %s/%s (%s): %s in %.3fs",
            step.playbook,
            spec.name,
            self.kind,
            result.status.value,
            elapsed,
        )
        return result

    @abc.abstractmethod
    async def _invoke(self, spec: SpecT, step: StepInput) -> Outcome: ...

"""The exception tree of alertpilot.

    AlertpilotError
    ├── ConfigError            config or playbook file is invalid (file, line, key path)
    ├── InvalidInput           a value someone wrote cannot be read (a matcher, a regex,
    │                          command arguments); also a ValueError
    ├── PayloadError           an inbound request body is malformed           -> HTTP 400
    ├── AuthError              missing or wrong credentials / signature        -> HTTP 401
    ├── NotFound               no such incident / resource                     -> HTTP 404
    │   └── NotConfigured      the feature is off in this configuration       -> HTTP 404
    ├── RequestRefused         refused whatever the credentials (a browser's cross-site
    │                          request, an unknown Host, not JSON, too slow) -> its status
    ├── TransitionError        (bot.core.incidents) a status change the state machine refuses -> 409
    ├── ActionRefused          a rule refuses an action: who may act (bot.slack.access), a
    │                          remediation guard, a silence's reach; the message says why
    ├── RenderingError         a template fails to render, or a prompt to fit
    ├── StepError              (bot.diagnostics.base) a diagnostic step has no answer
    ├── UpstreamError          another system could not do what was asked: HttpError,
    │                          PrometheusError, AlertmanagerError, EventsApiError, LlmError,
    │                          RestUnavailable, OnCallUnavailable, PreconditionUnavailable
    ├── StoreError             the store failed
    │   └── StoreUnavailable   the store cannot commit right now (locked, disk full) -> HTTP 503
    └── JobError               a background job failed
        ├── RetryLater         transient: run the job again after a delay
        └── PermanentFailure   retrying cannot help: record and stop

HTTP status codes are mapped from these in one place, ``guarded`` in ``bot.server.routes``.
"""

from __future__ import annotations

from collections.abc import Sequence


class AlertpilotError(Exception):
    """Base class of every error alertpilot raises on purpose."""


class ConfigError(AlertpilotError):
    """A configuration or playbook file is invalid.

    ``problems`` holds one line per problem, each naming file, line and key path.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PayloadError(AlertpilotError):
    """An inbound request body cannot be accepted; ``code`` is a stable machine-readable name."""

    def __init__(self, message: str, *, code: str = "invalid_payload") -> None:
        self.code = code
        super().__init__(message)


class AuthError(AlertpilotError):
    """Credentials or a signature are missing or wrong."""


class NotFound(AlertpilotError):
    """The requested resource does not exist."""


class NotConfigured(NotFound):
    """The endpoint's feature is off; the message says how to turn it on."""


class InvalidInput(AlertpilotError, ValueError):
    """A value someone wrote (a matcher, a pattern, a command's arguments) cannot be read."""


class ActionRefused(AlertpilotError):
    """A rule refuses the action; ``str(exc)`` says why, for people."""


class RenderingError(AlertpilotError):
    """A template failed to render, or a prompt cannot be made to fit."""


class UpstreamError(AlertpilotError):
    """Another system (Prometheus, Alertmanager, PagerDuty, Slack, the LLM, a diagnostic
    or remediation target) could not do what was asked."""


class RequestRefused(AlertpilotError):
    """A request refused before its credentials are looked at; ``status`` and ``code``
    are what the client gets."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class StoreError(AlertpilotError):
    """The store failed in a way the caller should not retry blindly."""


class StoreUnavailable(StoreError):
    """The store cannot commit right now (locked, disk full, closed); callers may retry."""


class JobError(AlertpilotError):
    """A background job failed."""


class RetryLater(JobError):
    """A transient failure: run the job again after ``delay`` s (None: the runner's backoff).

    ``counts=False`` marks a scheduled wait rather than a failure (a rate limit's next
    slot): it uses up none of the job's attempts.
    """

    def __init__(self, message: str, *, delay: float | None = None, counts: bool = True) -> None:
        self.delay = delay
        self.counts = counts
        super().__init__(message)


class PermanentFailure(JobError):
    """A failure that retrying cannot fix; the job is marked failed and the reason recorded."""

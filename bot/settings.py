"""alertpilot's configuration: one YAML file, validated by models that reject unknown keys.

A section left out turns its feature off (Slack, PagerDuty, LLM); it is never an error.
Secrets are ``SecretStr``: they print as ``**********`` in logs, errors and API output.
Relative paths are relative to the working directory the process starts in.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from bot.core import regex
from bot.core.durations import Duration, Target
from bot.core.matchers import MatcherStr
from bot.core.yamlsource import load_file, require_mapping, validate_source
from bot.errors import ConfigError
from bot.playbook.allowlist import url_allowed
from bot.shipped import shipped

DEFAULT_CONFIG = shipped("configs") / "alertpilot.yaml"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _blank_to_none(value: object) -> object:
    """``${TOKEN:-}`` yields an empty string; treat it as "not set"."""
    return None if value == "" else value


def _base_url(value: str) -> str:
    """An absolute http(s) URL with a host and no user name, query or fragment: a base
    that links are compared with (scheme, host, port and path prefix, as in
    ``bot.playbook.allowlist``)."""
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an absolute http(s) URL, e.g. https://grafana.example.com")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ValueError("a base URL has no user name, query string or fragment")
    if not url_allowed(value, [value]):
        raise ValueError("holds whitespace, a backslash or a '.' or '..' path segment")
    return value


BaseUrl = Annotated[str, AfterValidator(_base_url)]


class Severity(StrEnum):
    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"


class BasicAuth(Strict):
    username: str
    password: SecretStr


class ServerSettings(Strict):
    listen: str = "127.0.0.1:8080"
    public_url: str | None = None
    webhook_token: SecretStr | None = None
    webhook_basic_auth: BasicAuth | None = None
    api_token: SecretStr | None = None
    # Host names requests may be addressed to, besides loopback, the listen host and
    # public_url's ("*": any, for a proxy that checks Host itself). See bot.server.exposure.
    allowed_hosts: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=16 * 1024 * 1024)
    shutdown_timeout: Duration = 10.0
    # Slow clients (bot.server.connections): a connection that has not sent a request's headers
    # this long after it opened or after its last answer is closed; a body not all there
    # this long after it is read is answered 408; at most this many connections are open.
    idle_timeout: Duration = 15.0
    body_timeout: Duration = 30.0
    max_connections: int = Field(default=1000, ge=16)

    @field_validator("idle_timeout", "body_timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive (e.g. 15s)")
        return value

    _blank = field_validator("webhook_token", "api_token", "public_url", mode="before")(
        _blank_to_none
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8080")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class LoggingSettings(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


StoreBackend = Literal["sqlite", "postgresql"]
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def _postgres_url(value: str) -> str:
    """A libpq connection URI with a host and a database: checked here, so that a typo
    is a config error naming the key rather than a failure at the first connection."""
    parts = urlsplit(value)
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("the port must be a number (postgresql://HOST:5432/DB)") from None
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError("needs a host: postgresql://USER:PASSWORD@HOST:5432/DATABASE")
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        raise ValueError("needs a database name: postgresql://USER:PASSWORD@HOST:5432/DATABASE")
    return value


class StoreSettings(Strict):
    """``url``: ``sqlite:///PATH`` (one process, the embedded default) or
    ``postgresql://USER:PASSWORD@HOST:PORT/DATABASE`` (``postgres://`` too), which several
    replicas share. ``lease``: how long a job claimed by a replica stays its own without
    being renewed; a replica that dies holding jobs gives them up to the others after it
    (PostgreSQL only; SQLite has one process). ``pool_size``: connections per replica."""

    url: str = "sqlite:///var/alertpilot.db"
    busy_timeout: Duration = 5.0
    # Processed webhook payloads, finished jobs and expired keys older than this are
    # deleted (hourly); incidents and their timelines are kept.
    retention: Duration = 7 * 86400.0
    lease: Duration = 30.0
    pool_size: int = Field(default=10, ge=2, le=200)

    @field_validator("retention", "lease")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive (e.g. 7d)")
        return value

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value.startswith(_POSTGRES_SCHEMES):
            return _postgres_url(value)
        if not value.startswith("sqlite:///"):
            raise ValueError(
                "expected sqlite:///PATH (e.g. sqlite:///var/alertpilot.db) or"
                " postgresql://USER:PASSWORD@HOST:5432/DATABASE"
            )
        return value

    @property
    def backend(self) -> StoreBackend:
        return "postgresql" if self.url.startswith(_POSTGRES_SCHEMES) else "sqlite"

    @property
    def sqlite_path(self) -> str:
        return self.url.removeprefix("sqlite:///")

    @property
    def url_password(self) -> str | None:
        """The password in a PostgreSQL URL, scrubbed from logs like any secret."""
        return urlsplit(self.url).password if self.backend == "postgresql" else None


class PrometheusSettings(Strict):
    """``external_url``: where people open this Prometheus (its ``--web.external-url``),
    when that is not ``url``. The generator URLs of its alerts are on it: an alert's
    expression is graphed only when its generator URL is on ``url`` or ``external_url``
    (and the expression is one of this Prometheus's alerting rules, ``bot.slack.alert_rules``),
    and its "Prometheus graph" link is shown only then (or when ``links.allowed_urls``
    allows it)."""

    url: str = "http://127.0.0.1:9090"
    external_url: BaseUrl | None = None
    timeout: Duration = 10.0
    retries: int = Field(default=2, ge=0, le=10)
    bearer_token: SecretStr | None = None

    _blank = field_validator("bearer_token", "external_url", mode="before")(_blank_to_none)

    @property
    def bases(self) -> list[str]:
        """The URLs this Prometheus is known by: ``url``, and ``external_url`` if set."""
        return [self.url, *([self.external_url] if self.external_url else [])]


class AlertmanagerSettings(Strict):
    """``external_url``: where people open this Alertmanager (its ``--web.external-url``,
    the ``externalURL`` of the groups it sends), when that is not ``url``. Silence links
    are built on it; a group's ``externalURL`` is linked only when it is on ``url`` or
    ``external_url`` (or ``links.allowed_urls`` allows it)."""

    url: str = "http://127.0.0.1:9093"
    external_url: BaseUrl | None = None
    timeout: Duration = 10.0

    _blank = field_validator("external_url", mode="before")(_blank_to_none)

    @property
    def browser_url(self) -> str:
        """Where links for people point: ``external_url``, else ``url``."""
        return self.external_url or self.url

    @property
    def bases(self) -> list[str]:
        return [self.url, *([self.external_url] if self.external_url else [])]


class LinkSettings(Strict):
    """Where the links that arrive with an alert may point, besides the configured
    Prometheus and Alertmanager (``url``, ``external_url``): the runbook wiki, Grafana.
    Each entry allows links with its scheme, host and port whose path starts with its
    path, on a segment boundary (``https://wiki.example.com/runbooks``); an entry with
    no path allows the whole host (``https://grafana.example.com``). A link elsewhere is
    not sent: Slack and PagerDuty say that a link was hidden."""

    allowed_urls: list[BaseUrl] = Field(default_factory=list)
    # Where a runbook link written as a path (``docs/runbooks/x.md#y``, ``runbooks/x``) is
    # opened: the path is resolved against it, in a rule's runbook_url and a playbook's
    # links alike, and links under it are allowed. Without it such a path is no link.
    runbook_base_url: BaseUrl | None = None

    _blank = field_validator("runbook_base_url", mode="before")(_blank_to_none)


class PlaybookSettings(Strict):
    paths: list[str] = Field(default_factory=lambda: ["playbooks"])


class RuleSettings(Strict):
    """Prometheus rule files (files or folders of ``*.yml``/``*.yaml``) whose alerts reach
    alertpilot: ``alertpilot check`` warns about a ``runbook_url`` in them that people
    could not open. alertpilot does not load them otherwise."""

    paths: list[str] = Field(default_factory=list)


class DiagnosticsSettings(Strict):
    """``http`` diagnostics GET only URLs on this list or on ``remediation.allowed_urls``.

    A pipeline's diagnostics share one ``deadline``: what has not answered by then is
    recorded as timed out (not checked) and the pipeline goes on. ``concurrency`` caps
    the queries in flight across all pipelines. Each upstream (Prometheus, Alertmanager,
    every HTTP target) has a circuit breaker: ``breaker_errors`` failures within
    ``breaker_window`` open it for ``breaker_cooldown``, during which its checks fail at
    once as not checked; then one call is let through to try it again.
    """

    allowed_urls: list[str] = Field(default_factory=list)
    deadline: Duration = Field(default=15.0, gt=0)
    concurrency: int = Field(default=16, ge=1, le=256)
    breaker_errors: int = Field(default=5, ge=1)
    breaker_window: Duration = 30.0
    breaker_cooldown: Duration = 30.0


class IncidentSettings(Strict):
    severity_label: str = "severity"
    severity_map: dict[str, Severity] = Field(
        default_factory=lambda: {
            "critical": Severity.P1,
            "error": Severity.P1,
            "high": Severity.P1,
            "warning": Severity.P2,
            "info": Severity.P3,
            "none": Severity.P3,
        }
    )
    default_severity: Severity = Severity.P2


class AckTargets(Strict):
    """How soon an incident of each severity must be acknowledged (``never``: no target)."""

    P0: Target = 300.0
    P1: Target = 900.0
    P2: Target = 3600.0
    P3: Target = None

    def of(self, severity: Severity) -> float | None:
        value: float | None = getattr(self, severity.value)
        return value


class ResolveTargets(Strict):
    """How soon an incident of each severity should be resolved (``never``: no target)."""

    P0: Target = 4 * 3600.0
    P1: Target = 24 * 3600.0
    P2: Target = None
    P3: Target = None

    def of(self, severity: Severity) -> float | None:
        value: float | None = getattr(self, severity.value)
        return value


class ResponseSettings(Strict):
    """Response targets and the process around them (``bot/targets.py``, Slack).

    An incident not acknowledged within ``ack_within`` of its severity goes one escalation
    level up, and again each ``ack_within`` after that, up to ``max_level`` (the first
    page is level 1); a playbook's ``escalation.ack_within`` and ``resolve_within``
    override these per severity. ``resolve_within`` is shown ("resolve by") and a miss is
    noted and counted. Slack reminds the thread to post a status update every
    ``reminder_every`` (0: never) for ``reminder_severities`` until the incident resolves,
    and posts a postmortem draft when one of ``postmortem_severities`` resolves.
    """

    ack_within: AckTargets = Field(default_factory=AckTargets)
    resolve_within: ResolveTargets = Field(default_factory=ResolveTargets)
    max_level: int = Field(default=3, ge=1, le=10)
    reminder_every: Duration = 900.0
    reminder_severities: list[Severity] = Field(default_factory=lambda: [Severity.P0, Severity.P1])
    postmortem_severities: list[Severity] = Field(
        default_factory=lambda: [Severity.P0, Severity.P1]
    )

    @field_validator("reminder_every")
    @classmethod
    def _not_too_often(cls, value: float) -> float:
        if 0 < value < 60:
            raise ValueError("at least 1m (0 turns reminders off)")
        return value


class LaneSettings(Strict):
    """Slots per lane (``bot/runtime/jobs.py``): how many jobs of each lane run at once."""

    notify: int = Field(default=8, ge=1, le=256)
    pipeline: int = Field(default=16, ge=1, le=256)
    narrative: int = Field(default=4, ge=1, le=256)


class WorkerSettings(Strict):
    lanes: LaneSettings = Field(default_factory=LaneSettings)
    # Above this many webhooks a second, work behind the ack steps aside (bot/runtime/load.py).
    flood_rate: float = Field(default=500.0, ge=0)
    poll_interval: Duration = 1.0
    max_attempts: int = Field(default=12, ge=1)
    backoff_base: Duration = 1.0
    backoff_max: Duration = 300.0
    drain_timeout: Duration = 8.0


class LlmSettings(Strict):
    provider: Literal["template", "openai"] = "template"
    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"
    max_prompt_tokens: int = Field(default=4000, ge=256)
    max_tokens: int = Field(default=600, ge=16)
    timeout: Duration = 30.0
    prompts_dir: str | None = None
    cache_ttl: Duration = 3600.0
    daily_token_budget: int = Field(default=2_000_000, ge=0)
    concurrency: int = Field(default=2, ge=1)
    redact_patterns: list[str] = Field(default_factory=list)
    # narratives (bot/narrative): retries, breaker, storm mode, API rate limit, timing
    max_attempts: int = Field(default=3, ge=1, le=3)
    retry_backoff: Duration = 0.5
    retry_after_max: Duration = 10.0
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    breaker_errors: int = Field(default=5, ge=1)
    breaker_window: Duration = 30.0
    breaker_cooldown: Duration = 120.0
    storm_threshold: int = Field(default=10, ge=1)
    storm_window: Duration = 300.0
    storm_settle: Duration = 30.0
    settle: Duration = 3.0
    llm_fallback_delay: Duration = 120.0
    api_rate_limit: int = Field(default=10, ge=1)
    api_rate_window: Duration = 60.0

    _blank = field_validator("api_key", "base_url", mode="before")(_blank_to_none)

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for i, pattern in enumerate(patterns):
            try:
                regex.compile(pattern)
            except regex.RegexError as exc:
                raise ValueError(f"redact_patterns[{i}] is not a valid RE2 regex: {exc}") from None
        return patterns


class SlackRoute(Strict):
    """Incidents whose common labels satisfy every matcher go to ``channel``."""

    match: list[MatcherStr] = Field(min_length=1)
    channel: str = Field(min_length=1)


_SLACK_APPROVER = r"^[UWS][A-Z0-9]{2,}$"  # a user (U/W) or a user group (S)
_SLACK_CHANNEL_ID = r"^[CG][A-Z0-9]{2,}$"  # a channel ID: public (C) or an older private (G)
_SLACK_MENTION = r"^([UWS][A-Z0-9]{2,}|here|channel)$"
SlackPerson = Annotated[str, Field(pattern=_SLACK_APPROVER)]


class SlackSettings(Strict):
    """Who may do what from Slack (``bot/slack/access.py``): anyone in an incident's own
    channel acts on it; from anywhere else only ``responders`` may. ``query`` (ad-hoc
    PromQL) is for ``query_users`` and ``query_channels`` alone, off when both are empty.
    A silence asked for in Slack lasts at most ``max_silence``. ``approvers`` approve
    remediations, wherever they are.
    """

    bot_token: SecretStr
    signing_secret: SecretStr
    api_url: str = "https://slack.com/api/"
    default_channel: str
    app_token: SecretStr | None = None
    routes: list[SlackRoute] = Field(default_factory=list)
    approvers: list[SlackPerson] = Field(default_factory=list)
    responders: list[SlackPerson] = Field(default_factory=list)
    query_users: list[SlackPerson] = Field(default_factory=list)
    query_channels: list[Annotated[str, Field(pattern=_SLACK_CHANNEL_ID)]] = Field(
        default_factory=list
    )
    max_silence: Duration = Field(default=86400.0, ge=60.0, le=30 * 86400.0)
    command: str = Field(default="/alertpilot", pattern=r"^/[a-z0-9_-]{1,31}$")
    timeout: Duration = 10.0
    channel_rate: float = Field(default=1.0, gt=0, le=50)  # posts per second, per channel
    storm_threshold: int = Field(default=10, ge=1)
    storm_window: Duration = 60.0
    graphs: bool = True
    # who a new incident's message mentions, by severity; P3 never mentions anyone
    mentions: dict[Severity, list[Annotated[str, Field(pattern=_SLACK_MENTION)]]] = Field(
        default_factory=dict
    )

    _blank = field_validator("app_token", mode="before")(_blank_to_none)

    @field_validator("mentions")
    @classmethod
    def _p3_is_quiet(cls, value: dict[Severity, list[str]]) -> dict[Severity, list[str]]:
        if value.get(Severity.P3):
            raise ValueError("P3 incidents post without notifying anyone: remove mentions.P3")
        return value


# How late PagerDuty may deliver a webhook event, with room (see PagerDutySettings).
PAGERDUTY_REDELIVERY = 7 * 86400.0


class PagerDutySettings(Strict):
    routing_key: SecretStr
    events_url: str = "https://events.pagerduty.com/v2/enqueue"
    api_token: SecretStr | None = None
    api_url: str = "https://api.pagerduty.com"
    webhook_secret: SecretStr | None = None
    ca_file: str | None = None
    ack_silences: bool = False
    ack_silence_duration: Duration = 86400.0  # upper bound; the silence is expired on resolve
    timeout: Duration = 10.0  # per HTTP call to PagerDuty
    retry_backoff: Duration = 30.0  # first retry after a 429/5xx/network error, then doubling
    retry_backoff_max: Duration = 600.0
    rate_limit_per_minute: int = Field(default=100, ge=1, le=10_000)  # per routing key
    decision_timeout: Duration = 60.0  # wait this long for playbook.matched, then page by default
    oncall_cache_ttl: Duration = 60.0
    api_retry_delay: Duration = 1.0  # REST API (on-call list): pause before its one retry
    # The REST API's From header: the PagerDuty user an account API token acts as when it
    # escalates an incident (a user's own token needs none).
    from_email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    # Webhook event ids are remembered this long, and events that occurred longer ago are
    # not applied: the signature carries no time, so this is what stops a replay.
    seen_event_retention: Duration = 30 * 86400.0

    _blank = field_validator("api_token", "webhook_secret", "ca_file", "from_email", mode="before")(
        _blank_to_none
    )

    @field_validator("seen_event_retention")
    @classmethod
    def _outlasts_redelivery(cls, value: float) -> float:
        """PagerDuty retries a failed delivery for up to 48 hours, and deliveries queued
        behind it wait their turn (three dropped in a row disable the subscription), so a
        delivery can come about six days after its event: a shorter window would refuse
        it as too old."""
        if value < PAGERDUTY_REDELIVERY:
            raise ValueError(
                "must be at least 7d: PagerDuty may deliver an event days after it occurred"
            )
        return value

    @field_validator("routing_key")
    @classmethod
    def _routing_key_set(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("is empty: set it, or leave the pagerduty section out")
        return value


class RemediationMode(StrEnum):
    OFF = "off"
    DRY_RUN = "dry_run"
    SUGGEST = "suggest"
    APPROVAL = "approval"
    AUTO = "auto"


class RemediationSettings(Strict):
    mode: RemediationMode = RemediationMode.APPROVAL
    allowed_urls: list[str] = Field(default_factory=list)
    allowed_commands: list[str] = Field(default_factory=list)
    approval_ttl: Duration = 3600.0


_CONSOLE_NAME = r"^[^\x00-\x1f\x7f]{1,64}$"  # a person's name as the timeline shows it
ConsoleName = Annotated[str, Field(pattern=_CONSOLE_NAME)]


class ConsoleUser(Strict):
    """One person who signs in to the console with a token of their own: the timeline
    names them, so a token is not shared."""

    name: ConsoleName
    token: SecretStr

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. openssl rand -hex 24)")
        return value


class ConsoleSettings(Strict):
    """The incident console at ``/ui/`` (``bot/console``): off without this section.

    People sign in with their own token (``users``: a session cookie follows), or an
    auth proxy in front (oauth2-proxy and the like) names them in ``user_header``, which
    is believed only on connections from ``trusted_proxies`` (addresses or CIDRs).
    ``approvers`` (console names) approve and reject remediations; nobody does when it is
    empty. Anyone signed in may acknowledge, resolve and silence, a silence for at most
    ``max_silence``."""

    users: list[ConsoleUser] = Field(default_factory=list)
    trusted_proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(
        default_factory=list
    )
    user_header: str = Field(default="X-Forwarded-User", pattern=r"^[A-Za-z0-9-]{1,64}$")
    approvers: list[ConsoleName] = Field(default_factory=list)
    session_ttl: Duration = Field(default=12 * 3600.0, ge=60.0, le=30 * 86400.0)
    max_silence: Duration = Field(default=86400.0, ge=60.0, le=30 * 86400.0)
    refresh_every: Duration = Field(default=30.0, ge=5.0, le=3600.0)
    page_size: int = Field(default=50, ge=5, le=500)

    @field_validator("users")
    @classmethod
    def _distinct(cls, users: list[ConsoleUser]) -> list[ConsoleUser]:
        names = [user.name for user in users]
        tokens = [user.token.get_secret_value() for user in users]
        if len(set(names)) < len(names) or len(set(tokens)) < len(tokens):
            raise ValueError("each user needs a name and a token of their own")
        return users

    @model_validator(mode="after")
    def _someone_gets_in(self) -> ConsoleSettings:
        if not self.users and not self.trusted_proxies:
            raise ValueError("nobody could sign in: list users (name and token) or trusted_proxies")
        return self


class Settings(Strict):
    server: ServerSettings = Field(default_factory=ServerSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)
    links: LinkSettings = Field(default_factory=LinkSettings)
    playbooks: PlaybookSettings = Field(default_factory=PlaybookSettings)
    rules: RuleSettings = Field(default_factory=RuleSettings)
    diagnostics: DiagnosticsSettings = Field(default_factory=DiagnosticsSettings)
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    response: ResponseSettings = Field(default_factory=ResponseSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    slack: SlackSettings | None = None
    pagerduty: PagerDutySettings | None = None
    remediation: RemediationSettings = Field(default_factory=RemediationSettings)
    console: ConsoleSettings | None = None

    def secret_values(self) -> list[str]:
        """Every configured secret, scrubbed from logs and kept from the LLM's prompts."""
        found: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, SecretStr):
                if secret := value.get_secret_value():
                    found.append(secret)
            elif isinstance(value, BaseModel):
                for name in type(value).model_fields:
                    walk(getattr(value, name))
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        walk(self)
        if password := self.store.url_password:  # as written in the URL, and decoded
            found.extend({password, unquote(password)})
        return found


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, substitute and validate a config file; raise ConfigError naming file, line and key."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    docs = load_file(path, env=os.environ if env is None else env)
    if len(docs) != 1:
        raise ConfigError([f"{path}: expected exactly one YAML document, found {len(docs)}"])
    require_mapping(docs[0])
    return validate_source(Settings, docs[0])

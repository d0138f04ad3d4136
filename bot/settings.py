"""alertpilot's configuration: one YAML file, validated by models that reject unknown keys.

A section left out turns its feature off (Slack, PagerDuty, LLM); it is never an error.
Secrets are ``SecretStr``: they print as ``**********`` in logs, errors and API output.
Relative paths are relative to the working directory the process starts in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from bot.durations import Duration
from bot.errors import ConfigError
from bot.yamlsource import load_file, require_mapping, validate_source

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "alertpilot.yaml"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _blank_to_none(value: object) -> object:
    """``${TOKEN:-}`` yields an empty string; treat it as "not set"."""
    return None if value == "" else value


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
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=16 * 1024 * 1024)
    shutdown_timeout: Duration = 10.0

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


class StoreSettings(Strict):
    url: str = "sqlite:///var/alertpilot.db"
    busy_timeout: Duration = 5.0

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith("sqlite:///"):
            raise ValueError("only sqlite:///PATH is supported (e.g. sqlite:///var/alertpilot.db)")
        return value

    @property
    def sqlite_path(self) -> str:
        return self.url.removeprefix("sqlite:///")


class PrometheusSettings(Strict):
    url: str = "http://127.0.0.1:9090"
    timeout: Duration = 10.0
    retries: int = Field(default=2, ge=0, le=10)
    bearer_token: SecretStr | None = None

    _blank = field_validator("bearer_token", mode="before")(_blank_to_none)


class AlertmanagerSettings(Strict):
    url: str = "http://127.0.0.1:9093"
    timeout: Duration = 10.0


class PlaybookSettings(Strict):
    paths: list[str] = Field(default_factory=lambda: ["playbooks"])


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


class WorkerSettings(Strict):
    concurrency: int = Field(default=4, ge=1, le=64)
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

    _blank = field_validator("api_key", "base_url", mode="before")(_blank_to_none)


class SlackRoute(Strict):
    match: list[str]
    channel: str


class SlackSettings(Strict):
    bot_token: SecretStr
    signing_secret: SecretStr
    api_url: str = "https://slack.com/api/"
    default_channel: str
    app_token: SecretStr | None = None
    routes: list[SlackRoute] = Field(default_factory=list)
    approvers: list[str] = Field(default_factory=list)
    command: str = "/alertpilot"

    _blank = field_validator("app_token", mode="before")(_blank_to_none)


class PagerDutySettings(Strict):
    routing_key: SecretStr
    events_url: str = "https://events.pagerduty.com/v2/enqueue"
    api_token: SecretStr | None = None
    api_url: str = "https://api.pagerduty.com"
    webhook_secret: SecretStr | None = None
    ca_file: str | None = None
    ack_silences: bool = False

    _blank = field_validator("api_token", "webhook_secret", "ca_file", mode="before")(
        _blank_to_none
    )


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


class Settings(Strict):
    server: ServerSettings = Field(default_factory=ServerSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)
    playbooks: PlaybookSettings = Field(default_factory=PlaybookSettings)
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    slack: SlackSettings | None = None
    pagerduty: PagerDutySettings | None = None
    remediation: RemediationSettings = Field(default_factory=RemediationSettings)

    def secret_values(self) -> list[str]:
        """Every configured secret, for scrubbing logs."""
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
        return found


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, substitute and validate a config file; raise ConfigError naming file, line and key."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    docs = load_file(path, env=os.environ if env is None else env)
    if len(docs) != 1:
        raise ConfigError([f"{path}: expected exactly one YAML document, found {len(docs)}"])
    require_mapping(docs[0])
    return validate_source(Settings, docs[0])

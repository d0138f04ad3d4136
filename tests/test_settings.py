"""Config: env substitution, unknown keys, errors with file, line and key path, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.settings import (
    DEFAULT_CONFIG,
    RemediationMode,
    Settings,
    Severity,
    StoreSettings,
    load_settings,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "alertpilot.yaml"
    path.write_text(text)
    return path


def test_embedded_default_config_is_valid() -> None:
    settings = load_settings(DEFAULT_CONFIG, env={})
    assert settings.store.url == "sqlite:///var/alertpilot.db"
    assert settings.llm.provider == "template"
    assert settings.slack is None and settings.pagerduty is None
    assert settings.server.webhook_token is None  # ${VAR:-} means "not set"
    assert settings.remediation.mode is RemediationMode.APPROVAL


def test_env_substitution_with_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "server:\n"
        "  listen: ${LISTEN:-0.0.0.0:9000}\n"
        "  webhook_token: ${TOKEN}\n"
        "prometheus:\n"
        "  url: http://${PROM_HOST:-prom}:9090\n"
        "  timeout: ${PROM_TIMEOUT:-15s}\n"
        "alertmanager:\n"
        "  url: $${literal}\n",
    )
    settings = load_settings(path, env={"TOKEN": "tok-123456", "PROM_HOST": "p1"})
    assert settings.server.port == 9000
    assert settings.server.webhook_token is not None
    assert settings.server.webhook_token.get_secret_value() == "tok-123456"
    assert settings.prometheus.url == "http://p1:9090"
    assert settings.prometheus.timeout == 15.0
    assert settings.alertmanager.url == "${literal}"


def test_missing_env_var_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  listen: 127.0.0.1:1\n  webhook_token: ${NOPE}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert err.value.problems == [
        f"{path}:3: environment variable NOPE is not set (use ${{NOPE:-default}})"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server:\n  listen: x\n  bogus: 1\n", ":3: server.bogus: unknown key"),
        ("server:\n  listen: nope\n", ":2: server.listen: Value error, expected HOST:PORT"),
        ("slack:\n  bot_token: x\n", ":1: slack.signing_secret: Field required"),
        (
            "slack:\n  bot_token: x\n  signing_secret: y\n  default_channel: c\n"
            "  routes:\n    - match: ['a=\"b\"']\n      chanel: x\n",
            ":7: slack.routes[0].chanel: unknown key",
        ),
        ("remediation:\n  mode: yolo\n", ":2: remediation.mode: Input should be"),
        (
            "workers:\n  poll_interval: soon\n",
            ":2: workers.poll_interval: Value error, not a duration",
        ),
        ("store:\n  url: mysql://x\n", ":2: store.url: Value error, expected sqlite"),
        ("store:\n  url: postgres://x\n", ":2: store.url: Value error, needs a database"),
        ("store:\n  url: postgresql://h:port/db\n", ":2: store.url: Value error, the port"),
        ("store:\n  retention: 0s\n", ":2: store.retention: Value error, must be positive"),
        (
            "pagerduty:\n  routing_key: x\n  seen_event_retention: 2d\n",
            ":3: pagerduty.seen_event_retention: Value error, must be at least 7d",
        ),
        ("server: [1, 2\n", ":2: invalid YAML"),
        ("server:\n  listen: a:1\nserver:\n  listen: b:2\n", ":3: server: duplicate key"),
        ("- 1\n- 2\n", ":1: expected a mapping at the top level"),
        ("server:\n  listen: !env LISTEN\n", ":2: server.listen: unsupported YAML tag !env"),
        (
            "workers:\n  lanes:\n    notify: !!int four\n",
            ":3: workers.lanes.notify: not a valid int",
        ),
    ],
)
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert any(expected in problem for problem in err.value.problems), err.value.problems
    assert all(problem.startswith(str(path)) for problem in err.value.problems)


SLACK = "slack:\n  bot_token: x\n  signing_secret: y\n  default_channel: C0ALERTS\n"


def test_pagerduty_event_ids_are_kept_30_days_unless_set(tmp_path: Path) -> None:
    pagerduty = load_settings(write(tmp_path, "pagerduty:\n  routing_key: x\n"), env={}).pagerduty
    assert pagerduty is not None and pagerduty.seen_event_retention == 30 * 86400.0
    text = "pagerduty:\n  routing_key: x\n  seen_event_retention: 7d\n"
    pagerduty = load_settings(write(tmp_path, text), env={}).pagerduty
    assert pagerduty is not None and pagerduty.seen_event_retention == 7 * 86400.0


def test_slack_access_defaults_fail_closed(tmp_path: Path) -> None:
    slack = load_settings(write(tmp_path, SLACK), env={}).slack
    assert slack is not None
    assert (slack.responders, slack.query_users, slack.query_channels) == ([], [], [])
    assert slack.max_silence == 86400.0
    text = (
        SLACK + "  responders: [U0ALICE, W0BOB, S0ONCALL]\n  query_users: [S0SRE]\n"
        "  query_channels: [C0OPS, G0LEGACY]\n  max_silence: 4h\n"
    )
    slack = load_settings(write(tmp_path, text), env={}).slack
    assert slack is not None
    assert slack.responders == ["U0ALICE", "W0BOB", "S0ONCALL"]
    assert (slack.query_users, slack.query_channels) == (["S0SRE"], ["C0OPS", "G0LEGACY"])
    assert slack.max_silence == 4 * 3600.0


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("responders: ['#sre']", "slack.responders[0]: String should match pattern"),
        ("responders: [alice]", "slack.responders[0]: String should match pattern"),
        ("query_users: [C0OPS]", "slack.query_users[0]: String should match pattern"),
        ("query_channels: ['#ops']", "slack.query_channels[0]: String should match pattern"),
        ("query_channels: [U0ALICE]", "slack.query_channels[0]: String should match pattern"),
        ("max_silence: 30s", "slack.max_silence: Input should be greater than or equal to 60"),
        ("max_silence: 31d", "slack.max_silence: Input should be less than or equal to"),
        ("max_silence: forever", "slack.max_silence: Value error, not a duration"),
    ],
)
def test_slack_access_settings_are_checked(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path, SLACK + f"  {line}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert [p for p in err.value.problems if f":5: {expected}" in p], err.value.problems


def test_link_hosts_default_to_the_configured_servers_only(tmp_path: Path) -> None:
    settings = load_settings(DEFAULT_CONFIG, env={})
    assert settings.links.allowed_urls == []
    assert (settings.prometheus.external_url, settings.alertmanager.external_url) == (None, None)
    assert settings.prometheus.bases == ["http://127.0.0.1:9090"]
    assert settings.alertmanager.browser_url == "http://127.0.0.1:9093"
    text = (
        "prometheus:\n  external_url: https://prometheus.example.com\n"
        "alertmanager:\n  external_url: https://alertmanager.example.com/am\n"
        "links:\n  allowed_urls: [https://wiki.example.com/runbooks, https://grafana.example]\n"
    )
    settings = load_settings(write(tmp_path, text), env={})
    assert settings.prometheus.bases == ["http://127.0.0.1:9090", "https://prometheus.example.com"]
    assert settings.alertmanager.browser_url == "https://alertmanager.example.com/am"
    assert settings.links.allowed_urls == [
        "https://wiki.example.com/runbooks",
        "https://grafana.example",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("links:\n  allowed_urls: [wiki.example.com]\n", "links.allowed_urls[0]: Value error"),
        ("links:\n  allowed_urls: ['ftp://wiki.example']\n", "expected an absolute http(s)"),
        ("links:\n  allowed_urls: ['https://a.example/x?y=1']\n", "no user name, query"),
        ("links:\n  allowed_urls: ['https://u@a.example']\n", "no user name, query"),
        ("links:\n  allowed_urls: ['https://a.example/x/../y']\n", "path segment"),
        ("links:\n  allowed_hosts: [a.example]\n", "links.allowed_hosts: unknown key"),
        ("prometheus:\n  external_url: prometheus:9090\n", "prometheus.external_url: Value"),
        ("alertmanager:\n  external_url: 'http://am.example\\x'\n", "a backslash"),
    ],
)
def test_link_hosts_are_checked(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), env={})
    assert any(expected in problem for problem in err.value.problems), err.value.problems


def test_response_targets_default_to_the_runbooks_and_merge_per_severity(
    tmp_path: Path,
) -> None:
    response = load_settings(DEFAULT_CONFIG, env={}).response
    ack, resolve = response.ack_within, response.resolve_within
    assert (ack.P0, ack.P1, ack.P2, ack.P3) == (300.0, 900.0, 3600.0, None)
    assert (resolve.P0, resolve.P1, resolve.P2, resolve.P3) == (4 * 3600.0, 86400.0, None, None)
    assert (response.max_level, response.reminder_every) == (3, 900.0)
    assert (
        response.reminder_severities
        == response.postmortem_severities
        == [
            Severity.P0,
            Severity.P1,
        ]
    )
    text = "response:\n  ack_within: {P2: 24h, P1: never}\n  reminder_every: 0\n"
    response = load_settings(write(tmp_path, text), env={}).response
    assert (response.ack_within.P0, response.ack_within.P1) == (300.0, None)  # P0 kept
    assert response.ack_within.P2 == 86400.0 and response.reminder_every == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("response:\n  ack_within: {P0: 0s}\n", "response.ack_within.P0: Value error"),
        ("response:\n  ack_within: {P4: 5m}\n", "response.ack_within.P4: unknown key"),
        ("response:\n  reminder_every: 30s\n", "at least 1m"),
        ("response:\n  max_level: 0\n", "response.max_level"),
        ("links:\n  runbook_base_url: docs/runbooks\n", "links.runbook_base_url: Value error"),
        ("pagerduty:\n  routing_key: k\n  from_email: ops\n", "pagerduty.from_email"),
    ],
)
def test_response_and_runbook_settings_are_checked(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), env={})
    assert any(expected in problem for problem in err.value.problems), err.value.problems


def test_secrets_never_show_in_errors_or_repr(tmp_path: Path) -> None:
    secret = "xoxb-very-secret-token"
    path = write(
        tmp_path,
        f"slack:\n  bot_token: {secret}\n  signing_secret: {secret}\n  default_channel: 7\n",
    )
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert secret not in str(err.value)
    ok = write(
        tmp_path, f"slack:\n  bot_token: {secret}\n  signing_secret: s\n  default_channel: c\n"
    )
    settings = load_settings(ok, env={})
    assert secret not in repr(settings) and secret not in settings.model_dump_json()
    assert secret in settings.secret_values()


def test_every_design_contract_key_exists() -> None:
    from bot.settings import (
        LlmSettings,
        PagerDutySettings,
        RemediationSettings,
        Settings,
        SlackSettings,
    )

    contract = {
        "server": {"listen", "public_url", "webhook_token", "api_token"},
        "store": {"url"},
        "prometheus": {"url"},
        "alertmanager": {"url"},
        "playbooks": {"paths"},
    }
    for section, names in contract.items():
        model = Settings.model_fields[section].annotation
        assert model is not None
        assert names <= set(model.model_fields), section  # type: ignore[union-attr]
    assert {"provider", "base_url", "api_key", "model", "max_prompt_tokens"} <= set(
        LlmSettings.model_fields
    )
    assert {"bot_token", "signing_secret", "api_url", "default_channel", "app_token", "routes",
            "approvers", "responders", "query_users", "query_channels",
            "max_silence"} <= set(SlackSettings.model_fields)  # fmt: skip
    assert {"routing_key", "events_url", "api_token", "api_url", "webhook_secret",
            "ca_file"} <= set(PagerDutySettings.model_fields)  # fmt: skip
    assert {"mode", "allowed_urls", "allowed_commands"} <= set(RemediationSettings.model_fields)


def test_postgresql_urls_and_their_password() -> None:
    store = StoreSettings(url="postgresql://bot:s3cr%40t@db.internal:5432/alertpilot")
    assert store.backend == "postgresql" and store.url_password == "s3cr%40t"
    assert StoreSettings(url="postgres://db/alertpilot").backend == "postgresql"
    assert StoreSettings().backend == "sqlite" and StoreSettings().url_password is None
    settings = Settings.model_validate({"store": {"url": store.url}})
    assert {"s3cr%40t", "s3cr@t"} <= set(settings.secret_values())

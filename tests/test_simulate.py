"""``alertpilot simulate``: matches, near misses, rendered queries and results, remediation
previews with the guard that would stop them, and no side effects."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import main
from conftest import FIXTURES
from stack import MetricsExporter, Prometheus

FIRING = FIXTURES / "alertmanager" / "captured-firing.json"
PLAYBOOKS = r"""
- name: checkout-errors
  match: ['alertname="HighErrorRate"', 'service="checkout"']
  severity: P0
  diagnostics:
    - name: error_rate
      kind: promql
      label: 5xx share
      unit: ratio
      expect: "< 0.05"
      query: app_error_ratio{service={{ labels.service | promql }}}
  remediations:
    - name: flip
      action:
        kind: webhook
        url: https://flags.internal/api/flags/fallback
        body: {service: "{{ labels.service }}"}
    - name: restart
      mode: auto
      when: app_error_ratio{service={{ labels.service | promql }}} > 0.1
      action:
        kind: command
        argv:
          - /usr/bin/systemctl
          - restart
          - {template: "{{ labels.service }}.service", pattern: '^[a-z-]+\.service$'}
- name: latency
  match: ['alertname="HighLatency"']
"""


def write_config(
    tmp_path: Path, prometheus: str = "http://127.0.0.1:9", mode: str = "auto"
) -> Path:
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "p.yaml").write_text(textwrap.dedent(PLAYBOOKS))
    config: dict[str, Any] = {
        "store": {"url": f"sqlite:///{tmp_path}/a.db"},
        "playbooks": {"paths": [str(folder)]},
        "prometheus": {"url": prometheus},
        "alertmanager": {"url": "http://127.0.0.1:9"},
        "remediation": {
            "mode": mode,
            "allowed_urls": ["https://flags.internal/api/flags"],
            "allowed_commands": ["/usr/bin/systemctl"],
        },
    }
    path = tmp_path / "alertpilot.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_simulate_without_prometheus_says_unavailable_quickly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    started = time.monotonic()
    assert main(["simulate", "--config", str(config), str(FIRING)]) == 0
    assert time.monotonic() - started < 10
    out = capsys.readouterr().out
    assert "incident  [P0] HighErrorRate (service=checkout) (triggered)" in out
    assert "playbooks checkout-errors (severity P1 -> P0)" in out
    assert '  - latency: alertname="HighLatency" does not hold' in out
    assert "diagnostics (Prometheus http://127.0.0.1:9: unavailable)" in out
    assert '  - checkout-errors/error_rate [promql] app_error_ratio{service="checkout"}' in out
    assert "      5xx share: Prometheus unavailable" in out
    assert (
        "  - checkout-errors/flip [approval] POST https://flags.internal/api/flags/fallback" in out
    )
    assert "  - checkout-errors/restart [auto] /usr/bin/systemctl restart checkout.service" in out
    assert "precondition not checked" in out
    assert out.rstrip().endswith("side effects: none (simulation)")
    assert not (tmp_path / "a.db").exists()


def test_simulate_json_with_remediation_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, mode="off")
    assert main(["simulate", "--config", str(config), "--json", str(FIRING)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["playbooks"] == ["checkout-errors"]
    assert plan["near_misses"] == [{"playbook": "latency", "failed": 'alertname="HighLatency"'}]
    assert plan["labels"]["instance"] == "pod-a"
    assert plan["diagnostics"][0]["status"] == "unavailable"
    assert [(r["step"], r["stopped_by"]) for r in plan["remediations"]] == [
        ("flip", "mode"),
        ("restart", "mode"),
    ]


def test_simulate_reports_broken_playbooks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    (tmp_path / "playbooks" / "p.yaml").write_text("- name: x\n  match: ['a=~\"(\"']\n")
    assert main(["simulate", "--config", str(config), str(FIRING)]) == 2
    assert f"{tmp_path}/playbooks/p.yaml:2: [0].match[0]" in capsys.readouterr().err


@pytest.mark.integration
async def test_simulate_reads_real_values(tmp_path: Path) -> None:
    async with MetricsExporter() as exporter:
        exporter.set("app_error_ratio", 0.123, {"service": "checkout"})
        async with Prometheus(tmp_path, scrape_targets=[exporter.target]) as prom:
            await prom.wait_for("app_error_ratio", lambda d: bool(d["result"]))
            config = write_config(tmp_path, prometheus=prom.url)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "simulate", "--config", str(config), str(FIRING),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert f"diagnostics (Prometheus {prom.url}: reachable)" in text
    assert "      5xx share: 12.3% (expected < 5%) FAIL" in text
    # the precondition was read from Prometheus and holds: auto mode would run it now
    assert "precondition not checked" not in text
    restart = text.split("checkout-errors/restart", 1)[1].splitlines()[1]
    assert "stopped by" not in restart
    assert not (tmp_path / "a.db").exists()

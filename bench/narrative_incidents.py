"""Incidents of the shipped playbooks, for the narrative benchmark.

Each playbook's alert comes from the alerting rule that raises it (rules/*.yml: labels,
annotations rendered with sample values), on the captured Alertmanager payload; its
diagnostics get results and its remediations outcomes, drawn from a seeded generator.
"""

from __future__ import annotations

import copy
import json
import random
import re
import zlib
from pathlib import Path
from typing import Any

import yaml

from bot.core.clock import ManualClock
from bot.core.incidents import EventKind, Incident
from bot.playbook.model import Playbook
from bot.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = ROOT / "tests" / "fixtures" / "alertmanager" / "captured-firing.json"
Row = dict[str, Any]


def playbooks() -> list[tuple[str, Playbook]]:
    found = []
    for path in sorted((ROOT / "playbooks").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        items = raw.get("playbooks", raw) if isinstance(raw, dict) else raw
        for item in items if isinstance(items, list) else [items]:
            found.append((path.name, Playbook.model_validate(item)))
    return found


def rules() -> dict[str, dict[str, Any]]:
    by_alert: dict[str, dict[str, Any]] = {}
    for path in sorted((ROOT / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text()).get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule:
                    by_alert.setdefault(rule["alert"], rule)
    return by_alert


def alertname_of(playbook: Playbook) -> str:
    for matcher in playbook.match:
        found = re.search(r'alertname=~?"\^?\(?([A-Za-z0-9_:]+)', str(matcher))
        if found:
            return found.group(1)
    return playbook.name


def render(text: str, labels: dict[str, str], value: float) -> str:
    text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), text)
    text = re.sub(r"\{\{\s*\$value\s*\|\s*humanizePercentage\s*\}\}", f"{value:.1%}", text)
    text = re.sub(r"\{\{\s*\$value[^}]*\}\}", f"{value:.3g}", text)
    return " ".join(re.sub(r"\{\{[^}]*\}\}", "", text).split())


def payload_for(alert: str, rule: dict[str, Any] | None, size: int, rng: random.Random) -> Row:
    body: Row = json.loads(PAYLOAD.read_text())
    template = body["alerts"][0]
    labels = {"alertname": alert, "namespace": "prod", "service": "assistant", "job": "assistant"}
    labels.update((rule or {}).get("labels", {}))
    body["alerts"] = []
    for i in range(size):
        alert_labels = {**labels, "instance": f"assistant-{i:02d}"}
        value = round(rng.uniform(0.06, 0.4), 3)
        notes = {
            k: render(str(v), alert_labels, value)
            for k, v in (rule or {}).get("annotations", {}).items()
        }
        body["alerts"].append(
            {
                **copy.deepcopy(template),
                "labels": alert_labels,
                "annotations": notes,
                "fingerprint": f"{zlib.crc32(f'{alert}{i}'.encode()):016x}",
            }
        )
    body["groupKey"] = f'{{}}:{{alertname="{alert}"}}'
    body["groupLabels"] = {"alertname": alert, "service": "assistant"}
    body["commonLabels"] = {k: v for k, v in labels.items()}
    shared = body["alerts"][0]["annotations"]
    body["commonAnnotations"] = {
        k: v for k, v in shared.items() if all(a["annotations"].get(k) == v for a in body["alerts"])
    }
    return body


def diagnostics_for(playbook: Playbook, rng: random.Random) -> list[Row]:
    out = []
    for d in playbook.diagnostics:
        value = round(rng.uniform(0, 2), 4)
        passed = d.expect.holds(value) if d.expect else None
        out.append(
            {
                "name": d.name,
                "label": d.label or d.name,
                "kind": d.kind,
                "status": "ok",
                "value": value,
                "unit": d.unit,
                "expect": str(d.expect) if d.expect else None,
                "passed": passed,
                "text": f"{d.label or d.name}: {value:g}",
                "lines": [f"assistant-0{i}: {value * (1 - i / 10):.3g}" for i in range(3)],
            }
        )
    return out


def remediations_for(playbook: Playbook, rng: random.Random) -> dict[str, Row]:
    states = ["suggested", "pending_approval", "succeeded", "failed", "skipped"]
    return {
        r.name: {
            "key": r.name,
            "step": r.name,
            "playbook": playbook.name,
            "kind": r.action.kind,
            "state": rng.choice(states),
            "attempt": 1,
            "reason": r.description[:120],
        }
        for r in playbook.remediations
    }


async def incident_of(store: SqliteStore, clock: ManualClock, body: Row, data: Row) -> Incident:
    from narrative_support import open_incident

    incident = await open_incident(store, clock, body)
    await store.update_incident(incident.id, now=clock.now(), data=data)
    steps = data.get("remediations", {})
    events = [(EventKind.PLAYBOOK, "matched"), (EventKind.DIAGNOSTICS_DONE, "diagnostics done")]
    events += [(EventKind.REMEDIATION, f"{k}: {v['state']}") for k, v in steps.items()]
    for kind, message in events:
        clock.advance(30)
        await store.append_event(
            incident.id,
            actor="alertpilot",
            kind=kind,
            message=message,
            now=clock.now(),
            notify=False,
        )
    return await store.get_incident(incident.id)

"""Grounded narratives: an adversarial LLM over the shipped playbooks' incidents.

For each of the shipped playbooks, ``VARIANTS`` incidents (bench/narrative_incidents.py:
the alert from its rule, a result for each diagnostic and an outcome for each
remediation, drawn from a seeded generator) are narrated by the real ``Narrator``
talking to the loopback OpenAI fake, which answers with a mix of:

- supported sentences, written from the facts the incident has: the alert and its
  service, diagnostic values as a person writes them (``12.3%``, ``1.2s``, the product's
  own formatting) with their expectation, remediation steps that ran (with the action
  they did) and next steps that propose one;
- invented sentences: a number, a pod name, a time, a release version, or an action
  that no step of the incident ran ("We restarted the API workers", "We switched
  traffic to the secondary provider"), each checked to be absent from the facts.

What the answer becomes is rendered into the incident's Slack message
(``bot.slack.render``), as on-call would read it. Measured: the invented sentences that
reach Slack (goal: none) and the share of supported sentences kept (goal: >= 90%).

    .venv/bin/python bench/grounding.py [--quick]
"""

from __future__ import annotations

import asyncio
import random
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from narrative_incidents import (  # noqa: E402
    alertname_of,
    diagnostics_for,
    incident_of,
    payload_for,
    playbooks,
    remediations_for,
    rules,
)
from prometheus_client import CollectorRegistry  # noqa: E402

from bot.core.clock import ManualClock  # noqa: E402
from bot.core.incidents import Incident  # noqa: E402
from bot.diagnostics.units import format_value  # noqa: E402
from bot.narrative.context import IncidentSubject  # noqa: E402
from bot.narrative.facts import from_incident  # noqa: E402
from bot.narrative.llm import LlmClient  # noqa: E402
from bot.narrative.metrics import NarrativeMetrics  # noqa: E402
from bot.narrative.narrator import Narrator  # noqa: E402
from bot.settings import LlmSettings  # noqa: E402
from bot.slack.render import Extras, incident_message  # noqa: E402
from bot.store.sqlite import SqliteStore  # noqa: E402
from fakes import FakeOpenAI  # noqa: E402

VARIANTS = 3
GOAL_KEPT = 0.90
Row = dict[str, Any]
RAN = {"succeeded", "failed"}
# What a ran step of each kind did, in the words a narrative uses.
DID = {
    "rollback": "We rolled back the deploy",
    "failover": "Traffic was switched to the secondary provider",
    "restart": "The workers were restarted",
    "scale": "The workers were scaled out",
    "pause": "The batch jobs were paused",
    "toggle": "The feature flag was disabled",
    "silence": "The noisy alerts were silenced",
}
INVENTED_ACTIONS = {
    "restart": "We restarted the API workers and the errors recovered.",
    "failover": "We switched traffic to the secondary provider an hour ago.",
    "rollback": "The last deploy was rolled back, which fixed it.",
    "silence": "The alert was silenced for the night.",
}


@dataclass
class Answer:
    text: str
    supported: list[str] = field(default_factory=list)
    invented: list[str] = field(default_factory=list)


def _families(step: str) -> list[str]:
    """Every kind of action a step's name says it does (``silence_paused_batch_alerts``
    silences and pauses)."""
    name = step.lower()
    return [
        family
        for family, words in (
            ("rollback", ("rollback", "revert")),
            ("failover", ("failover", "fail_over", "switch")),
            ("restart", ("restart",)),
            ("scale", ("scale",)),
            ("pause", ("pause",)),
            ("toggle", ("flag", "disable")),
            ("silence", ("silence",)),
        )
        if any(word in name for word in words)
    ]


def _absent(text: str, *needles: str) -> bool:
    return not any(needle.lower() in text for needle in needles)


def answer_for(incident: Incident, data: str, rng: random.Random) -> Answer:
    """Supported sentences from the incident's facts, and invented ones (absent from
    ``data``, the facts as the model was given them), shuffled."""
    facts = " ".join([data, incident.title, str(incident.data)]).lower()
    labels = {**incident.common_labels, **incident.group_labels}
    alertname, service = labels.get("alertname", "the alert"), labels.get("service", "")
    supported = [f"{alertname} is firing{f' on {service}' if service else ''}."]
    for d in incident.data.get("diagnostics", [])[:4]:
        value = format_value(d["value"], d.get("unit") or "")
        verdict = {True: "within", False: "outside"}.get(d.get("passed"), "with no")
        supported.append(f"{d['label']} is {value}, {verdict} its expectation.")
    ran = []
    for step, info in incident.data.get("remediations", {}).items():
        families = _families(step)
        if info["state"] in RAN and families:
            ran += families
            supported.append(f"{DID[families[0]]} ({step} {info['state']}).")
        elif info["state"] in ("suggested", "pending_approval"):
            supported.append(f"Next: consider {step} once someone approves it.")
    invented = []
    values = [float(v) for v in re.findall(r"\d+(?:\.\d+)?", facts)]
    while True:  # a percentage that no value of the facts rounds to, in any scale
        percent = rng.randint(21, 97)
        near = any(abs(v * scale - percent) <= 1.5 for v in values for scale in (1, 100))
        if not near and _absent(facts, str(percent)):
            break
    invented.append(f"The error budget burned {percent}% of the month in an hour.")
    pod = f"{service or 'api'}-{rng.randrange(16**5):05x}"
    invented.append(f"Pod {pod} was OOM-killed just before the alert.")
    while True:
        at = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
        if _absent(facts, at):
            break
    invented.append(f"The first errors appeared at {at} UTC.")
    version = f"v{rng.randint(2, 9)}.{rng.randint(10, 40)}.{rng.randint(1, 9)}"
    invented.append(f"Release {version} introduced the regression.")
    unused = [family for family in INVENTED_ACTIONS if family not in ran]
    invented.append(INVENTED_ACTIONS[rng.choice(unused)])
    sentences = [(s, True) for s in supported] + [(s, False) for s in invented]
    rng.shuffle(sentences)
    return Answer(
        "\n".join(f"- {s}" for s, _ in sentences),
        [s for s, ok in sentences if ok],
        [s for s, ok in sentences if not ok],
    )


def slack_text(incident: Incident, narrative: Row) -> str:
    """The incident's Slack message text, with this narrative in it."""
    shown = Incident(**{**incident.__dict__, "data": {**incident.data, "narrative": narrative}})
    blocks = incident_message(shown, Extras()).blocks
    return "\n".join(str(b.get("text", {}).get("text", "")) for b in blocks)


def _unescaped(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


async def main(quick: bool) -> dict[str, Any]:
    rng = random.Random(11)
    shipped, rule_of = playbooks(), rules()
    variants = 1 if quick else VARIANTS
    fake = FakeOpenAI("sk-bench-key")
    await fake.start()
    totals = {"answers": 0, "supported": 0, "kept": 0, "invented": 0, "leaked": 0}
    fallbacks, leaks, lost = 0, [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            clock = ManualClock()
            store = SqliteStore(f"{tmp}/bench.db", clock=clock.now)
            await store.open()
            settings = LlmSettings(
                provider="openai", base_url=fake.api_base, api_key="sk-bench-key", cache_ttl=0
            )
            client = LlmClient(settings)
            client.open()
            narrator = Narrator(
                settings, store, clock, NarrativeMetrics(CollectorRegistry()), llm=client
            )
            try:
                for n in range(variants):
                    for _file, playbook in shipped:
                        alert = alertname_of(playbook)
                        body = payload_for(alert, rule_of.get(alert), 3, rng)
                        body["groupKey"] += f"{playbook.name}-{n}"
                        data = {
                            "diagnostics": diagnostics_for(playbook, rng),
                            "remediations": remediations_for(playbook, rng),
                        }
                        incident = await incident_of(store, clock, body, data)
                        given = narrator.builder.build(
                            IncidentSubject(from_incident(incident)), "engineer"
                        ).data
                        answer = answer_for(incident, given, rng)
                        fake.reply = answer.text
                        result = await narrator.for_incident(incident, "engineer")
                        shown = _unescaped(slack_text(incident, result.to_data()))
                        totals["answers"] += 1
                        fallbacks += result.source == "template"
                        totals["supported"] += len(answer.supported)
                        totals["invented"] += len(answer.invented)
                        for sentence in answer.supported:
                            if sentence in shown:
                                totals["kept"] += 1
                            else:
                                lost.append(sentence)
                        for sentence in answer.invented:
                            if sentence in shown:
                                totals["leaked"] += 1
                                leaks.append(sentence)
            finally:
                await client.close()
                await store.close()
    finally:
        await fake.stop()
    return {**totals, "fallbacks": fallbacks, "leaks": leaks[:5], "lost": lost[:5]}


def run(quick: bool = False) -> list[Row]:
    got = asyncio.run(main(quick))
    answers, invented, supported = got["answers"], got["invented"], got["supported"]
    kept = got["kept"] / supported if supported else 0.0
    where = f"{answers} adversarial answers over the shipped playbooks' incidents"
    return [
        {
            "benchmark": "grounded narratives: invented claims that reach Slack",
            "measured": f"{got['leaked']} of {invented} invented sentences",
            "baseline": f"{invented} invented sentences in {where}",
            "ratio": f"{got['leaked'] / invented:.3f}" if invented else "n/a",
            "goal": "0",
            "met": got["leaked"] == 0,
            "note": "leaked: " + "; ".join(got["leaks"]) if got["leaks"] else "",
        },
        {
            "benchmark": "grounded narratives: supported sentences kept",
            "measured": f"{got['kept']} of {supported} ({kept:.1%}); "
            f"{got['fallbacks']} answers replaced by the template",
            "baseline": f"{supported} supported sentences in {where}",
            "ratio": f"{kept:.3f}",
            "goal": f">= {GOAL_KEPT:.0%}",
            "met": kept >= GOAL_KEPT,
            "note": "lost, e.g.: " + "; ".join(got["lost"]) if got["lost"] else "",
        },
    ]


if __name__ == "__main__":
    for result in run("--quick" in sys.argv[1:]):
        print(result)

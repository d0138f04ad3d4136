"""Narrative prompt size and cache hit rate, for the shipped playbooks' incidents.

    .venv/bin/python bench/narrative_tokens.py [--out docs/benchmarks-narrative.md]

1. For every shipped playbook: an incident built from the alerting rule that raises its
   alert (rules/*.yml: labels, annotations rendered with sample values; three firing
   instances), with a result for each of its diagnostics, an outcome for each of its
   remediations, and the timeline the pipeline writes. Tokens (cl100k_base) of the data
   section as a naive ``json.dumps`` of the Alertmanager payload, a naive ``json.dumps``
   of everything the narrative uses, compact JSON and TOON of alertpilot's context, and
   the whole prompt (system + user message) as sent.
2. The same for group sizes 1 to 60, where TOON's tables pay off.
3. A replayed day of alerts through the real Narrator, store-backed cache (TTL 1 h) and the
   loopback OpenAI fake: what share of narrative requests the cache answers.

Prints a Markdown report and writes it to docs/benchmarks-narrative.md.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import random
import sys
import tempfile
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
from bot.core.incidents import Incident, Status  # noqa: E402
from bot.narrative.context import IncidentSubject  # noqa: E402
from bot.narrative.facts import from_incident  # noqa: E402
from bot.narrative.llm import LlmClient  # noqa: E402
from bot.narrative.metrics import NarrativeMetrics  # noqa: E402
from bot.narrative.narrator import Narrator  # noqa: E402
from bot.narrative.prompt import PromptBuilder, compact_json, toon  # noqa: E402
from bot.narrative.redact import Redactor  # noqa: E402
from bot.narrative.templates import PromptBook  # noqa: E402
from bot.narrative.tokens import ApproxCounter, default_counter  # noqa: E402
from bot.playbook.model import Playbook  # noqa: E402
from bot.settings import LlmSettings  # noqa: E402
from bot.store.sqlite import SqliteStore  # noqa: E402
from fakes import FakeOpenAI  # noqa: E402

OUT = ROOT / "docs" / "benchmarks-narrative.md"
Row = dict[str, Any]


def measure(incident: Incident, body: Row, builder: PromptBuilder) -> Row:
    counter = builder.counter
    subject = IncidentSubject(from_incident(incident))
    data = builder.redactor.data(subject.context(len(subject)))
    everything = {
        "payload": body,
        **dict(incident.data),
        "timeline": [e.__dict__ for e in incident.timeline],
    }
    prompt = builder.build(subject, "engineer")
    return {
        "naive_payload": counter.count(json.dumps(body)),
        "naive_all": counter.count(json.dumps(everything, default=str)),
        "json": counter.count(compact_json(data)),
        "toon": counter.count(toon(data)),
        "chosen": prompt.encoding,
        "prompt": prompt.tokens,
        "kept": f"{prompt.kept}/{prompt.total}",
    }


# the replayed day ------------------------------------------------------------------------


async def replay_day(
    store: SqliteStore,
    clock: ManualClock,
    fake: FakeOpenAI,
    shipped: list[tuple[str, Playbook]],
    rule_of: dict[str, Any],
) -> Row:
    """24 h: noisy alerts flap, people ask for explanations, incidents resolve.

    Per incident: the narrative after diagnostics (the pipeline's trigger); 0-3 engineers
    opening "explain" in Slack or the CLI within the hour; for P0/P1 a stakeholder summary,
    asked for by 1-3 people; the narrative again after the remediation outcome and on
    resolve. Every fourth alert type flaps (8 incidents a day); half of its re-fires
    repeat the same facts (same alerts, same diagnostic results), the others differ.
    The other alert types fire 0-2 times a day.
    """
    rng = random.Random(11)
    settings = LlmSettings(
        provider="openai",
        base_url=fake.api_base,
        api_key=fake.api_key,
        cache_ttl=3600,
        daily_token_budget=0,
    )
    client = LlmClient(settings)
    client.open()
    narrator = Narrator(settings, store, clock, NarrativeMetrics(CollectorRegistry()), llm=client)
    requests = 0
    try:
        for index, (_, playbook) in enumerate(shipped):
            alert = alertname_of(playbook)
            flapping = index % 4 == 0
            fires = 8 if flapping else rng.randint(0, 2)
            for fire in range(fires):
                clock.advance(rng.uniform(600, 86400 / 40))
                repeat = flapping and rng.random() < 0.5
                state = random.Random(index if repeat else rng.random())
                body = payload_for(alert, rule_of.get(alert), 3, state)
                body["groupKey"] += f"#{fire}"
                data = {"diagnostics": diagnostics_for(playbook, random.Random(state.random()))}
                incident = await incident_of(store, clock, body, data)
                await narrator.for_incident(incident, "engineer")
                requests += 1
                for _ in range(rng.randint(0, 3)):
                    clock.advance(rng.uniform(30, 1800))
                    await narrator.for_incident(incident, "engineer")
                    requests += 1
                if incident.severity.value in ("P0", "P1"):
                    for _ in range(1 + rng.randint(0, 2)):
                        await narrator.for_incident(incident, "stakeholder")
                        requests += 1
                steps = remediations_for(playbook, random.Random(state.random()))
                if steps:
                    await store.update_incident(
                        incident.id, now=clock.now(), data={"remediations": steps}
                    )
                    incident = await store.get_incident(incident.id)
                    await narrator.for_incident(incident, "engineer")
                    requests += 1
                clock.advance(rng.uniform(300, 3600))
                incident = await store.transition(
                    incident.id,
                    Status.RESOLVED,
                    actor="alertmanager",
                    message="resolved",
                    now=clock.now(),
                )
                await narrator.for_incident(await store.get_incident(incident.id), "engineer")
                requests += 1
    finally:
        await client.close()
    sample = narrator.metrics.registry.get_sample_value
    hits = sample("alertpilot_narrative_cache_total", {"result": "hit"}) or 0.0
    misses = sample("alertpilot_narrative_cache_total", {"result": "miss"}) or 0.0
    tokens = (
        sample("alertpilot_narrative_tokens_total", {"provider": "openai", "model": settings.model})
        or 0.0
    )
    return {
        "requests": requests,
        "hits": int(hits),
        "misses": int(misses),
        "calls": len(fake.completions),
        "tokens": int(tokens),
    }


# report ------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


async def main() -> str:
    counter, approx = default_counter(), ApproxCounter()
    book = PromptBook()
    builder = PromptBuilder(book, counter, Redactor(), max_tokens=4000)
    shipped, rule_of = playbooks(), rules()
    rng = random.Random(3)
    per_playbook, by_size, calibration = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        clock = ManualClock()
        store = SqliteStore(f"{tmp}/bench.db", clock=clock.now)
        await store.open()
        try:
            for file, playbook in shipped:
                alert = alertname_of(playbook)
                body = payload_for(alert, rule_of.get(alert), 3, rng)
                body["groupKey"] += playbook.name
                data = {
                    "diagnostics": diagnostics_for(playbook, rng),
                    "remediations": remediations_for(playbook, rng),
                }
                incident = await incident_of(store, clock, body, data)
                m = measure(incident, body, builder)
                per_playbook.append(
                    [
                        f"{file}: {playbook.name}",
                        alert,
                        len(playbook.diagnostics),
                        len(playbook.remediations),
                        m["naive_payload"],
                        m["naive_all"],
                        m["json"],
                        m["toon"],
                        m["chosen"],
                        m["prompt"],
                    ]
                )
                prompt = builder.build(IncidentSubject(from_incident(incident)), "engineer")
                calibration.append((counter.count(prompt.user), approx.count(prompt.user)))
            largest = max(shipped, key=lambda item: len(item[1].diagnostics))[1]
            for size in (1, 3, 10, 30, 60):
                alert = alertname_of(largest)
                body = payload_for(alert, rule_of.get(alert), size, rng)
                body["groupKey"] += f"size{size}"
                incident = await incident_of(
                    store, clock, body, {"diagnostics": diagnostics_for(largest, rng)}
                )
                m = measure(incident, body, builder)
                by_size.append(
                    [
                        size,
                        m["naive_payload"],
                        m["naive_all"],
                        m["json"],
                        m["toon"],
                        m["chosen"],
                        m["prompt"],
                        m["kept"],
                    ]
                )
        finally:
            await store.close()
        clock = ManualClock()
        store = SqliteStore(f"{tmp}/day.db", clock=clock.now)
        await store.open()
        try:
            async with FakeOpenAI(reply="A short narrative of the incident.") as fake:
                day = await replay_day(store, clock, fake, shipped, rule_of)
        finally:
            await store.close()
    exact = sum(c for c, _ in calibration)
    estimate = sum(a for _, a in calibration)
    hit_rate = day["hits"] / max(1, day["hits"] + day["misses"])
    report = (
        "\n\n".join(
            [
                "# Narrative prompt tokens and cache hit rate",
                "Generated by `bench/narrative_tokens.py`; tokens are cl100k_base (tiktoken). "
                '"naive payload" is `json.dumps` of the Alertmanager payload alone; "naive all" '
                'adds the diagnostics, remediations and timeline as stored; "JSON" and "TOON" '
                'are alertpilot\'s compacted context (the data section); "prompt" is system + user '
                "message as sent, with the smaller encoding.",
                "## Shipped playbooks (3 firing instances each)",
                table(
                    [
                        "playbook",
                        "alert",
                        "diagnostics",
                        "remediations",
                        "naive payload",
                        "naive all",
                        "JSON",
                        "TOON",
                        "chosen",
                        "prompt",
                    ],
                    per_playbook,
                ),
                f"## Group size ({alertname_of(largest)}, {len(largest.diagnostics)} diagnostics, "
                "cap 4000 tokens)",
                table(
                    [
                        "alerts",
                        "naive payload",
                        "naive all",
                        "JSON",
                        "TOON",
                        "chosen",
                        "prompt",
                        "facts kept",
                    ],
                    by_size,
                ),
                "## A replayed day (cache TTL 1 h)",
                inspect.cleandoc(replay_day.__doc__ or "").split("\n\n", 1)[1],
                table(
                    [
                        "narrative requests",
                        "cache hits",
                        "cache misses",
                        "hit rate",
                        "LLM calls",
                        "tokens used",
                    ],
                    [
                        [
                            day["requests"],
                            day["hits"],
                            day["misses"],
                            f"{hit_rate:.0%}",
                            day["calls"],
                            day["tokens"],
                        ]
                    ],
                ),
                "## Token counter",
                f"Without tiktoken's table alertpilot estimates tokens; on the user messages above "
                f"the estimate is {estimate} against {exact} cl100k tokens "
                f"({estimate / exact - 1:+.1%}).",
            ]
        )
        + "\n"
    )
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    out: Path = parser.parse_args().out
    report = asyncio.run(main())
    out.write_text(report)
    print(report)

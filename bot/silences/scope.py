"""Which silences quiet an incident, and nothing but it.

An incident's group labels do not bound what a silence on them reaches: an alert without
the ``service`` label forms a group of ``{alertname}`` alone, and a silence on that
silences the alert name everywhere, whoever sent the alert. So the Slack Silence button
and command and PagerDuty's ``ack_silences`` silence the incident's firing alerts one by
one, each on its whole label set with equality matchers (a label value never becomes a
regex), as Alertmanager's own UI silences an alert. Several silences rather than one: a
single silence selecting several label sets exactly would need regexes, and their
combinations reach label sets nobody asked for.

Before any is made, Alertmanager is asked which alerts each would match (``GET
/api/v2/alerts`` with ``filter=`` matchers, silenced, inhibited and unprocessed alerts
included). If one of them is not an alert of the incident (firing or resolved), nothing
is silenced: :class:`SilenceRefused` says why, and the caller tells the person or the
timeline.

A silence still matches by labels: an alert that starts later with all of a silenced
alert's labels and more is matched too. Only what Alertmanager knows when the silence is
asked for can be checked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from bot.core.incidents import Incident
from bot.core.matchers import Matcher, MatcherError, MatchOp
from bot.errors import ActionRefused
from bot.upstream.alertmanager import AlertmanagerClient, AlertmanagerError

MAX_ALERTS = 50  # one silence each; more is a storm to silence in Alertmanager itself
SHOWN = 3  # outside alerts named in a refusal
LABELS_SHOWN = 300  # characters of one label set in a message

AlertSilence = tuple[Matcher, ...]  # the matchers of one silence


class SilenceRefused(ActionRefused):
    """Silencing the incident would reach beyond it, or cannot be done narrowly enough;
    nothing was silenced. The message says why, for people."""


def describe(labels: Mapping[str, str]) -> str:
    """A label set as ``{name="value", ...}``, sorted by name, cut to ``LABELS_SHOWN``."""
    parts = (f"{k}={json.dumps(labels[k], ensure_ascii=False)}" for k in sorted(labels))
    text = "{" + ", ".join(parts) + "}"
    return text if len(text) <= LABELS_SHOWN else text[: LABELS_SHOWN - 2] + "…}"


def alert_silence(labels: Mapping[str, str]) -> AlertSilence:
    """Equality matchers on every label of one alert. Raises MatcherError for a label
    name a matcher cannot hold: leaving that label out would widen the silence."""
    return tuple(Matcher(name, MatchOp.EQ, labels[name]) for name in sorted(labels))


def as_labels(matchers: AlertSilence) -> dict[str, str]:
    return {m.name: m.value for m in matchers}


def silences_for(incident: Incident) -> list[AlertSilence]:
    """One silence per firing alert of the incident (distinct label sets, in its order).

    Resolved alerts are not silenced: there is nothing of theirs to quiet, and one that
    fires again is news. Raises SilenceRefused when there is no firing alert, more than
    ``MAX_ALERTS``, or a label no matcher can hold.
    """
    sets: dict[frozenset[tuple[str, str]], Mapping[str, str]] = {}
    for alert in incident.firing:
        sets.setdefault(frozenset(alert.labels.items()), alert.labels)
    if not sets:
        raise SilenceRefused(f"incident #{incident.id} has no firing alert to silence")
    if len(sets) > MAX_ALERTS:
        raise SilenceRefused(
            f"incident #{incident.id} has {len(sets)} firing alerts; alertpilot silences at "
            f"most {MAX_ALERTS} (one silence each): silence them in Alertmanager"
        )
    try:
        return [alert_silence(labels) for labels in sets.values()]
    except MatcherError as exc:
        raise SilenceRefused(
            f"an alert of incident #{incident.id} has a label no silence matcher can hold "
            f"({exc.reason}); a silence without that label would reach other alerts"
        ) from None


async def outside(
    client: AlertmanagerClient, incident: Incident, silence: AlertSilence
) -> list[dict[str, str]]:
    """The label sets of alerts Alertmanager knows that ``silence`` would match and that
    are not alerts of the incident. Raises AlertmanagerError when it cannot say."""
    own = {frozenset(alert.labels.items()) for alert in incident.alerts}
    found = await client.alerts(silence, active=True, silenced=True, inhibited=True)
    out: list[dict[str, str]] = []
    for alert in found:
        labels = _labels(alert)
        if frozenset(labels.items()) not in own:
            out.append(labels)
    return out


async def check(
    client: AlertmanagerClient, incident: Incident, silences: Sequence[AlertSilence]
) -> None:
    """Raise SilenceRefused if any of ``silences`` would match an alert outside the
    incident, naming the first few; AlertmanagerError if Alertmanager cannot say."""
    for silence in silences:
        others = await outside(client, incident, silence)
        if not others:
            continue
        named = "; ".join(describe(labels) for labels in others[:SHOWN])
        more = f" and {len(others) - SHOWN} more" if len(others) > SHOWN else ""
        count = "1 alert" if len(others) == 1 else f"{len(others)} alerts"
        raise SilenceRefused(
            f"a silence on {describe(as_labels(silence))} would also silence {count} "
            f"outside incident #{incident.id}: {named}{more}"
        )


async def plan(client: AlertmanagerClient, incident: Incident) -> list[AlertSilence]:
    """The silences for the incident's firing alerts, each checked with Alertmanager."""
    silences = silences_for(incident)
    await check(client, incident, silences)
    return silences


def _labels(alert: Any) -> dict[str, str]:
    labels = alert.get("labels") if isinstance(alert, Mapping) else None
    if not isinstance(labels, Mapping):
        raise AlertmanagerError(f"unexpected alert in Alertmanager's answer: {alert!r:.200}")
    return {str(name): str(value) for name, value in labels.items()}

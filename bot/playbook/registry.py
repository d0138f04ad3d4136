"""The loaded playbooks, and the rule for which ones run.

Playbooks are tried in ascending ``order``; ties keep load order (file order, then
position in the file). The first that matches runs; one with ``continue: true`` lets
later matches run too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from bot.core.matchers import first_failing, matches_all
from bot.playbook.model import Playbook


class PlaybookSet:
    def __init__(self, playbooks: Sequence[Playbook]) -> None:
        names = [p.name for p in playbooks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"playbook names must be unique: {', '.join(dupes)}")
        # sorted() is stable: equal orders keep load order
        self._playbooks = sorted(playbooks, key=lambda p: p.order)
        self._by_name = {p.name: p for p in self._playbooks}

    def __iter__(self) -> Iterator[Playbook]:
        return iter(self._playbooks)

    def __len__(self) -> int:
        return len(self._playbooks)

    def get(self, name: str | None) -> Playbook | None:
        return None if name is None else self._by_name.get(name)

    def matching(self, labels: Mapping[str, str]) -> list[Playbook]:
        """The playbooks that run for these labels, in order."""
        out = []
        for playbook in self._playbooks:
            if matches_all(playbook.match, labels):
                out.append(playbook)
                if not playbook.continue_:
                    break
        return out

    def near_misses(self, labels: Mapping[str, str]) -> list[tuple[Playbook, str]]:
        """Playbooks that did not match, each with the first matcher that failed."""
        out = []
        for playbook in self._playbooks:
            failing = first_failing(playbook.match, labels)
            if failing is not None:
                out.append((playbook, str(failing)))
        return out

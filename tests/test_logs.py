"""Logs: JSON lines when configured, and configured secrets never in any record."""

from __future__ import annotations

import json
import logging

import pytest

from bot.runtime import logs


def test_json_lines_and_secret_scrubbing(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "xoxb-secret-value-123"
    logs.configure("INFO", "json", [secret, "ab"])
    try:
        log = logging.getLogger("bot.test")
        log.info("token is %s", secret, extra={"header": f"Bearer {secret}"})
        try:
            raise RuntimeError(f"failed with {secret}")
        except RuntimeError:
            log.exception("boom %d", 7)
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        logging.getLogger().handlers.clear()
    assert lines[0]["msg"] == "token is **********"
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "bot.test"
    assert lines[0]["header"] == "Bearer **********"
    assert lines[1]["msg"] == "boom 7"
    assert "**********" in lines[1]["exc"]
    assert secret not in json.dumps(lines)

"""Fuzzing the inbound endpoints: every malformed body gets a clear 4xx, the server stays up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app import create_app
from conftest import JSON, make_settings, payload

ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


def mutations() -> st.SearchStrategy[bytes]:
    """Bodies near a real payload: fields dropped, retyped, stretched, or random JSON."""
    base = payload("captured-firing")

    def mutate(draw: st.DrawFn) -> bytes:
        body: dict[str, Any] = json.loads(json.dumps(base))
        choice = draw(st.integers(0, 5))
        key = draw(st.sampled_from(sorted(body)))
        if choice == 0:
            del body[key]
        elif choice == 1:
            body[key] = draw(ANY_JSON)
        elif choice == 2:
            alert = body["alerts"][0]
            alert[draw(st.sampled_from(sorted(alert)))] = draw(ANY_JSON)
        elif choice == 3:
            body["alerts"][0]["labels"][draw(st.text(max_size=50))] = draw(st.text(max_size=2000))
        elif choice == 4:
            return json.dumps(draw(ANY_JSON)).encode()
        else:
            raw = json.dumps(body).encode()
            cut = draw(st.integers(0, len(raw)))
            return raw[:cut] + draw(st.binary(max_size=20))
        return json.dumps(body).encode()

    return st.composite(lambda draw: mutate(draw))()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=mutations())
async def test_alertmanager_endpoint_never_fails_badly(
    body: bytes, aiohttp_client: Any, tmp_path_factory: Any
) -> None:
    client: TestClient = await _client(aiohttp_client, tmp_path_factory)
    resp = await client.post("/alertmanager", data=body, headers=JSON)
    answer = await resp.json()
    assert resp.status in (200, 400), (resp.status, answer)
    if resp.status == 400:
        assert answer["error"] in ("invalid_json", "invalid_payload")
        assert answer["message"]
    health = await client.get("/healthz")
    assert health.status == 200


_clients: dict[int, TestClient] = {}


async def _client(aiohttp_client: Any, tmp_path_factory: Any) -> TestClient:
    """One app for all examples of a test: hypothesis calls the body many times, with the
    same function-scoped fixtures, and the server must stay up across all of them."""
    key = id(aiohttp_client)
    if key not in _clients:
        path: Path = tmp_path_factory.mktemp("fuzz")
        _clients.clear()
        _clients[key] = await aiohttp_client(create_app(make_settings(path)))
    return _clients[key]

"""Property-based tests: whatever a client sends, the API answers a 4xx with a JSON error or a
valid result (never a 500, a hang or a crash), and ``classify`` either judges a text or
raises the library's own error. The server keeps answering afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from topicguard import TopicGuard
from topicguard._exceptions import TopicGuardError
from topicguard.serve import ServeConfig, create_app

# every code point, lone surrogates and control characters included
ANY_CHAR = st.characters(codec=None, categories=None)
TEXTS = st.one_of(
    st.text(ANY_CHAR, max_size=300),
    st.text(st.sampled_from(" \t\n\r\x00\x0b\u200b\u3000"), max_size=20),  # blank-ish
    st.text(st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF), max_size=30),  # emoji
    st.text(st.characters(categories=["Cc", "Cf", "Cs", "Co", "Zs"]), max_size=50),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(ANY_CHAR, max_size=40),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(["text", "texts", "x"]), children, max_size=3)
    ),
    max_leaves=20,
)
FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

MAX_TEXTS, MAX_CHARS, MAX_BODY = 8, 2000, 20_000


@pytest.fixture(scope="module")
def guard(tiny_guard: Path) -> TopicGuard:
    return TopicGuard.load(tiny_guard)


@pytest.fixture(scope="module")
def client(guard: TopicGuard, tiny_guard: Path) -> Iterator[TestClient]:
    config = ServeConfig(
        model_dir=tiny_guard, max_texts=MAX_TEXTS, max_chars=MAX_CHARS, max_body_bytes=MAX_BODY
    )
    with TestClient(create_app(config, guard=guard)) as test_client:
        yield test_client


def _check(response: Any, sent: int | None = None) -> None:
    """A 200 with one result per text, or a 4xx whose JSON body names the problem."""
    assert response.status_code != 500, response.text
    body = response.json()
    if response.status_code == 200:
        results = body["results"]
        assert sent is None or len(results) == sent
        for result in results:
            assert result["label"] in ("True", "False")
            assert 0.0 <= result["score"] <= 1.0
            assert isinstance(result["allowed"], bool)
    else:
        assert 400 <= response.status_code < 500
        assert isinstance(body["error"], str) and body["error"]


@FAST
@given(text=TEXTS)
def test_classify_judges_any_text_or_says_why_not(guard: TopicGuard, text: str) -> None:
    try:
        verdicts = guard.classify([text])
    except TopicGuardError as exc:
        assert not text.strip() and "empty" in str(exc)
    else:
        assert len(verdicts) == 1 and 0.0 <= verdicts[0].score <= 1.0


@FAST
@given(texts=st.lists(TEXTS, min_size=1, max_size=12))
def test_api_answers_any_texts(client: TestClient, texts: list[str]) -> None:
    body = json.dumps({"texts": texts}).encode()  # lone surrogates travel as \ud800 escapes
    response = client.post(
        "/v1/classify", content=body, headers={"content-type": "application/json"}
    )
    _check(response, sent=len(texts))


@FAST
@given(body=JSON_VALUES)
def test_api_answers_any_json_body(client: TestClient, body: Any) -> None:
    _check(client.post("/v1/classify", content=json.dumps(body).encode()))


@FAST
@given(raw=st.binary(max_size=400))
def test_api_answers_any_bytes(client: TestClient, raw: bytes) -> None:
    _check(client.post("/v1/classify", content=raw))
    _check(client.post("/v1/classify", content=b'{"text": "' + raw + b'"}'))  # invalid UTF-8


def test_huge_inputs_are_refused_and_the_server_keeps_answering(client: TestClient) -> None:
    megabyte = "a" * 1_000_000
    cases = [
        ({"text": megabyte}, 413),
        ({"texts": ["where is my parcel"] * 10_000}, 413),
        ({"text": "x" * (MAX_CHARS + 1)}, 413),
        ({"texts": ["where is my parcel"] * (MAX_TEXTS + 1)}, 413),
    ]
    for body, status in cases:
        response = client.post("/v1/classify", content=json.dumps(body).encode())
        assert response.status_code == status and response.json()["error"]
    assert client.get("/healthz").status_code == 200
    ok = client.post("/v1/classify", json={"text": "where is my parcel"})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 1

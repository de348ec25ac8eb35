from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from topicguard import TopicGuard
from topicguard.serve import ServeConfig, create_app


@pytest.fixture(scope="module")
def guard(tiny_guard: Path) -> TopicGuard:
    return TopicGuard.load(tiny_guard)


def _client(guard: TopicGuard, tiny_guard: Path, **kwargs: Any) -> TestClient:
    config = ServeConfig(model_dir=tiny_guard, **kwargs)
    return TestClient(create_app(config, guard=guard))


def test_classify_one_and_many_match_the_runtime(guard: TopicGuard, tiny_guard: Path) -> None:
    with _client(guard, tiny_guard) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json()["status"] == "ready"
        one = client.post("/v1/classify", json={"text": "Where is my parcel?"})
        assert one.status_code == 200
        body = one.json()
        assert body["model"] == tiny_guard.name
        expected = guard.classify(["Where is my parcel?"])[0]
        assert body["results"] == [
            {
                "label": expected.label,
                "score": expected.score,
                "allowed": expected.allowed,
                "lang": "en",
                "lang_supported": True,
            }
        ]
        other = client.post("/v1/classify", json={"text": "Где моя посылка?"}).json()
        assert other["results"][0]["lang"] == "ru"
        assert other["results"][0]["lang_supported"] is False
        many = client.post("/v1/classify", json={"texts": ["a", "where is my parcel", "poem"]})
        assert [r["score"] for r in many.json()["results"]] == [
            v.score for v in guard.classify(["a", "where is my parcel", "poem"])
        ]
        metrics = client.get("/metrics").text
        assert 'topicguard_requests_total{status="200"} 3' in metrics
        assert "topicguard_request_seconds_bucket" in metrics
        assert "topicguard_batch_size_count" in metrics


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 422, 'exactly one of "text", "texts" or "messages"'),
        ({"text": "a", "texts": ["b"]}, 422, 'exactly one of "text", "texts" or "messages"'),
        ({"text": "a", "messages": [{"role": "user", "content": "b"}]}, 422, "exactly one of"),
        ({"messages": []}, 422, "messages: the conversation has no user message"),
        ({"messages": [{"role": "system", "content": "x"}]}, 422, "no user message"),
        ({"messages": [{"role": "user", "content": 5}]}, 422, "string or a list of parts"),
        ({"messages": [{"role": "user", "content": "x" * 101}]}, 413, "at most 100"),
        ({"messages": [{"role": "user", "content": "x"}] * 9}, 413, "at most 8 per conversation"),
        ({"messages": "where is my parcel"}, 422, "messages"),
        ({"text": "   "}, 422, "text 1 is empty"),
        ({"texts": []}, 422, "at least one text"),
        ({"texts": ["x"] * 5}, 413, "at most 4 per request"),
        ({"text": "x" * 101}, 413, "at most 100"),
        ({"text": 5}, 422, "text"),
        ([1, 2], 422, "body"),
    ],
)
def test_bad_requests_get_clear_json_errors(
    guard: TopicGuard, tiny_guard: Path, body: Any, status: int, message: str
) -> None:
    with _client(guard, tiny_guard, max_texts=4, max_chars=100, max_messages=8) as client:
        response = client.post("/v1/classify", json=body)
        assert response.status_code == status
        assert message in response.json()["error"]


def test_body_size_limit_and_malformed_json(guard: TopicGuard, tiny_guard: Path) -> None:
    with _client(guard, tiny_guard, max_body_bytes=200) as client:
        response = client.post("/v1/classify", json={"text": "y" * 500})
        assert response.status_code == 413
        response = client.post(
            "/v1/classify", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert response.status_code == 422


def test_bearer_auth(guard: TopicGuard, tiny_guard: Path) -> None:
    with _client(guard, tiny_guard, api_key="s3cret") as client:
        assert client.post("/v1/classify", json={"text": "hi"}).status_code == 401
        wrong = client.post(
            "/v1/classify", json={"text": "hi"}, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
        ok = client.post(
            "/v1/classify", json={"text": "hi"}, headers={"Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 200
        assert client.get("/healthz").status_code == 200  # probes need no key


def test_concurrent_requests_are_micro_batched(guard: TopicGuard, tiny_guard: Path) -> None:
    import httpx

    app = create_app(ServeConfig(model_dir=tiny_guard, batch_wait_ms=20), guard=guard)
    texts = [f"where is parcel {i}" for i in range(24)]

    async def run() -> list[dict[str, Any]]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                responses = await asyncio.gather(
                    *(client.post("/v1/classify", json={"text": t}) for t in texts)
                )
                metrics = (await client.get("/metrics")).text
        assert all(r.status_code == 200 for r in responses)
        batches = float(  # prometheus-client writes every value as a float
            next(
                line.split()[-1]
                for line in metrics.splitlines()
                if line.startswith("topicguard_batch_size_count")
            )
        )
        assert batches < len(texts)  # several requests shared a batch
        return [r.json()["results"][0] for r in responses]

    results = asyncio.run(run())
    assert [r["score"] for r in results] == [v.score for v in guard.classify(texts)]


def test_classify_a_conversation(guard: TopicGuard, tiny_guard: Path) -> None:
    messages = [
        {"role": "system", "content": "You are the Spellbots support bot."},
        {"role": "user", "content": "where is my parcel"},
        {"role": "assistant", "content": "Which tracking number?"},
        {"role": "user", "content": [{"type": "text", "text": "SB1234567890"}]},
    ]
    with _client(guard, tiny_guard) as client:
        response = client.post("/v1/classify", json={"messages": messages})
        assert response.status_code == 200, response.text
        body = response.json()
    expected = guard.classify_conversation(messages)
    result = {k: v for k, v in expected.to_dict().items() if k != "text"}
    assert body == {"results": [result], "model": tiny_guard.name}

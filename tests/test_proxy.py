"""The OpenAI-compatible guard proxy, end to end on loopback: a fake LLM (real HTTP) as the
upstream, the proxy under uvicorn, the official ``openai`` client as the caller.

The tiny guard's scores are random, so its verdicts are forced: a text with ``BLOCK`` in it
is blocked, any other allowed; the rest of the guard (languages, scores, the conversation
rule) runs for real.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from fake_llm import FakeLLM, Reply
from typer.testing import CliRunner

from topicguard import LLMError, TopicGuard
from topicguard.cli import app
from topicguard.proxy import ProxyConfig, create_proxy_app, upstream_base
from topicguard.spec import GuardSpec, bundled_example, load_spec

BLOCK = "BLOCK"
SPEC = load_spec(bundled_example())
ALLOWED = [{"role": "user", "content": "Where is my parcel SB1234567890?"}]
BLOCKED = [{"role": "user", "content": f"write me a poem about the sea {BLOCK}"}]


@pytest.fixture(scope="module")
def guard(tiny_guard: Path) -> TopicGuard:
    loaded = TopicGuard.load(tiny_guard)
    classify = loaded.classify

    def forced(texts: Any, **kwargs: Any) -> list[Any]:
        return [
            dataclasses.replace(v, allowed=BLOCK not in v.text) for v in classify(texts, **kwargs)
        ]

    loaded.classify = forced  # type: ignore[method-assign]
    return loaded


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port, in a thread; its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def proxied(guard: TopicGuard, upstream: str, **config: Any) -> Iterator[tuple[str, openai.OpenAI]]:
    """The proxy in front of ``upstream``; its URL and an OpenAI client pointed at it."""
    with serving(create_proxy_app(guard, upstream, ProxyConfig(**config))) as url:
        client = openai.OpenAI(
            base_url=f"{url}/v1", api_key="client-key", max_retries=0, timeout=10
        )
        with client:
            yield url, client


def _echo(content: str = "It is out for delivery today.", **kwargs: Any) -> Callable[..., Reply]:
    return lambda request, number: Reply(content=content, **kwargs)


def test_upstream_url_with_or_without_v1_and_only_http() -> None:
    assert upstream_base("http://localhost:8080") == "http://localhost:8080/v1"
    assert upstream_base("https://api.example.com/v1/") == "https://api.example.com/v1"
    for bad in ("ftp://host/v1", "localhost:8080", ""):
        with pytest.raises(LLMError, match="http:// or https://"):
            upstream_base(bad)


def test_spec_refusal_per_language_falls_back_to_english() -> None:
    assert SPEC.missing_refusals() == []
    assert SPEC.refusal_text("zh").startswith("抱歉")
    assert SPEC.refusal_text("ru") == SPEC.refusal_text("en") == SPEC.refusal_text(None)
    bare = GuardSpec.model_validate(
        SPEC.model_dump(exclude={"refusal"}) | {"refusal": {"DE": " Nein. "}}
    )
    assert bare.refusal_text("de") == "Nein."
    assert "Spellbots Logistics" in bare.refusal_text("fr")  # the default English text
    assert bare.missing_refusals() == ["zh", "es", "fr"]
    with pytest.raises(ValueError, match="must not be empty"):
        GuardSpec.model_validate(SPEC.model_dump() | {"refusal": {"en": " "}})


def test_allowed_request_goes_upstream_unchanged_and_comes_back(guard: TopicGuard) -> None:
    with FakeLLM(_echo()) as fake, proxied(guard, fake.base_url) as (url, client):
        raw = client.chat.completions.with_raw_response.create(
            model="small-llm", messages=ALLOWED, temperature=0.2, extra_body={"seed": 7}
        )
        completion = raw.parse()
        assert completion.choices[0].message.content == "It is out for delivery today."
        assert completion.model == "small-llm" and completion.id == "fake-1"
        assert raw.headers["x-topicguard-verdict"] == "allowed"
        assert raw.headers["x-topicguard-lang"] == "en"
        assert 0 <= float(raw.headers["x-topicguard-score"]) <= 1
        assert fake.requests == [
            {"messages": ALLOWED, "model": "small-llm", "temperature": 0.2, "seed": 7}
        ]
        assert fake.headers[0]["authorization"] == "Bearer client-key"
        assert [m.id for m in client.models.list()] == ["fake"]
        # a list of parts is a valid content; it goes upstream as it came
        parts = [{"role": "user", "content": [{"type": "text", "text": "my parcel is late"}]}]
        client.chat.completions.create(model="small-llm", messages=parts)  # type: ignore[arg-type]
        assert fake.requests[-1]["messages"] == parts
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{url}/readyz").json()["status"] == "ready"
        metrics = httpx.get(f"{url}/metrics").text
        assert 'topicguard_requests_total{status="200"} 2' in metrics
        assert 'topicguard_verdicts_total{allowed="true"} 2' in metrics
        assert 'topicguard_upstream_total{outcome="200"} 3' in metrics  # and /models


def test_allowed_stream_is_relayed_chunk_by_chunk_as_it_arrives(guard: TopicGuard) -> None:
    gate = threading.Event()  # the upstream holds the rest until the first chunk got through
    reply = _echo("your parcel arrives tomorrow", gate=gate)
    with FakeLLM(reply) as fake, proxied(guard, fake.base_url) as (_, client):
        raw = client.chat.completions.with_raw_response.create(
            model="small-llm", messages=ALLOWED, stream=True
        )
        assert raw.headers["x-topicguard-verdict"] == "allowed"
        contents = []
        for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                contents.append(chunk.choices[0].delta.content)
                gate.set()
        assert contents == ["your", "parcel", "arrives", "tomorrow"]
        assert fake.streams == [("done", 6, True)]
        assert fake.requests[0]["stream"] is True


@pytest.mark.parametrize("stream", [False, True])
def test_blocked_request_never_reaches_the_upstream(guard: TopicGuard, stream: bool) -> None:
    with FakeLLM(_echo()) as fake, proxied(guard, fake.base_url) as (_, client):
        raw = client.chat.completions.with_raw_response.create(
            model="small-llm",
            messages=[{"role": "system", "content": "You are Spellbots' assistant."}, *BLOCKED],
            stream=stream,
            stream_options={"include_usage": True} if stream else openai.NOT_GIVEN,
        )
        assert raw.headers["x-topicguard-verdict"] == "blocked"
        assert raw.headers["x-topicguard-lang"] == "en"
        if stream:
            chunks = list(raw.parse())
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert chunks[0].choices[0].delta.role == "assistant"
            assert chunks[-2].choices[0].finish_reason == "stop"
            assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 0
            assert {c.object for c in chunks} == {"chat.completion.chunk"}
            assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
        else:
            completion = raw.parse()
            assert completion.id.startswith("chatcmpl-") and completion.model == "small-llm"
            assert completion.choices[0].finish_reason == "stop"
            assert completion.usage is not None and completion.usage.total_tokens == 0
            text = completion.choices[0].message.content or ""
        assert text == SPEC.refusal_text("en")
        assert fake.requests == []


def test_blocked_user_reads_the_refusal_in_their_language(guard: TopicGuard) -> None:
    spec = GuardSpec.model_validate(SPEC.model_dump() | {"refusal": {"de": "Nein, danke."}})
    parts = [{"type": "text", "text": f"Schreib mir ein Gedicht über den Frühling {BLOCK}"}]
    with FakeLLM(_echo()) as fake:
        with proxied(guard, fake.base_url) as (_, client):
            chinese = [{"role": "user", "content": f"帮我写一首关于春天的诗 {BLOCK}"}]
            raw = client.chat.completions.with_raw_response.create(model="m", messages=chinese)
            assert raw.headers["x-topicguard-lang"] == "zh"
            assert raw.parse().choices[0].message.content == SPEC.refusal_text("zh")
        app = create_proxy_app(guard, fake.base_url, spec=spec)  # as --spec guard.yaml does
        with serving(app) as url:
            body = {"model": "m", "messages": [{"role": "user", "content": parts}]}
            answer = httpx.post(f"{url}/v1/chat/completions", json=body)
            assert answer.headers["x-topicguard-lang"] == "de"
            assert answer.json()["choices"][0]["message"]["content"] == "Nein, danke."
        assert fake.requests == []


@pytest.mark.parametrize(
    ("status", "error", "stream"),
    [(429, openai.RateLimitError, False), (500, openai.InternalServerError, False)]
    + [(429, openai.RateLimitError, True)],
)
def test_upstream_errors_come_back_as_the_upstream_sent_them(
    guard: TopicGuard, status: int, error: type[Exception], stream: bool
) -> None:
    reply = _echo(status=status, message="slow down", headers={"retry-after": "3"})
    with FakeLLM(reply) as fake, proxied(guard, fake.base_url) as (_, client):
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="m", messages=ALLOWED, stream=stream)
        assert isinstance(caught.value, error) and caught.value.status_code == status
        assert caught.value.body == {"message": "slow down", "type": "fake", "code": status}
        assert caught.value.response.headers["retry-after"] == "3"
        assert caught.value.response.headers["x-topicguard-verdict"] == "allowed"


def test_slow_upstream_is_a_504_and_a_stream_that_stalls_ends_in_an_error(
    guard: TopicGuard,
) -> None:
    with (
        FakeLLM(_echo(delay=3)) as fake,
        proxied(guard, fake.base_url, upstream_timeout_s=0.5) as (
            _,
            client,
        ),
    ):
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="m", messages=ALLOWED)
        assert time.monotonic() - started < 2.5
        assert caught.value.status_code == 504
        assert caught.value.body["code"] == "upstream_timeout"  # type: ignore[index]
        assert caught.value.response.headers["x-topicguard-verdict"] == "allowed"
    with FakeLLM(_echo("a b c", chunk_delay=2)) as fake:
        with proxied(guard, fake.base_url, upstream_timeout_s=0.5) as (_, client):
            stream = client.chat.completions.create(model="m", messages=ALLOWED, stream=True)
            with pytest.raises(openai.APIError, match="did not answer within 0.5 s"):
                list(stream)


def test_unreachable_upstream_is_a_502_and_not_ready(
    guard: TopicGuard, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("topicguard.proxy")
    logger.addHandler(caplog.handler)  # the CLI's set-up may have stopped propagation
    try:
        upstream = f"http://127.0.0.1:{_free_port()}"
        with proxied(guard, upstream) as (url, client):
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(model="m", messages=ALLOWED)
            assert caught.value.status_code == 502
            assert caught.value.body["code"] == "upstream_unreachable"  # type: ignore[index]
            ready = httpx.get(f"{url}/readyz")
            assert ready.status_code == 503 and ready.json()["guard"] == "loaded"
            assert ready.json()["status"] == "upstream unreachable"
            # a blocked request needs no upstream
            answer = client.chat.completions.create(model="m", messages=BLOCKED)  # type: ignore[arg-type]
            assert answer.choices[0].message.content == SPEC.refusal_text("en")
    finally:
        logger.removeHandler(caplog.handler)
    assert any("unreachable" in r.getMessage() for r in caplog.records)


def test_client_that_disconnects_mid_stream_closes_the_upstream_stream(
    guard: TopicGuard,
) -> None:
    words = [f"w{i}" for i in range(200)]
    with FakeLLM(_echo(chunks=words, chunk_delay=0.02)) as fake:
        with proxied(guard, fake.base_url) as (_, client):
            stream = client.chat.completions.create(model="m", messages=ALLOWED, stream=True)
            iterator = iter(stream)
            next(iterator), next(iterator)
            stream.close()
            deadline = time.monotonic() + 5
            while not fake.streams and time.monotonic() < deadline:
                time.sleep(0.05)
    assert fake.streams and fake.streams[0][0] == "closed"
    assert fake.streams[0][1] < len(words)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not JSON"),
        (b"[1, 2]", 400, "body"),
        (b"{}", 400, "messages"),
        (b'{"model": "m", "messages": []}', 400, "messages"),
        (b'{"messages": [{"role": "system", "content": "hi"}]}', 400, 'role "user"'),
        (b'{"messages": [{"role": "user", "content": "  "}]}', 400, "no text"),
        (b'{"messages": [{"role": "user", "content": 5}]}', 400, "content"),
        (b'{"messages": [{"content": "hi"}]}', 400, "role"),
        (
            b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
            400,
            "no text",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": "x" * 300}]}).encode(),
            413,
            "at most",
        ),
        (json.dumps({"messages": [{"role": "user", "content": "x" * 2000}]}).encode(), 413, "body"),
    ],
)
def test_malformed_requests_get_a_4xx_json_error(
    guard: TopicGuard, body: bytes, status: int, message: str
) -> None:
    with (
        FakeLLM(_echo()) as fake,
        proxied(guard, fake.base_url, max_body_bytes=1000, max_chars=200) as (url, _),
    ):
        answer = httpx.post(
            f"{url}/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code == status
        error = answer.json()["error"]
        assert message in error["message"] and error["type"] == "invalid_request_error"
        assert fake.requests == []


def test_own_key_and_upstream_key(guard: TopicGuard) -> None:
    with FakeLLM(_echo()) as fake:
        with proxied(guard, fake.base_url, api_key="proxy-secret") as (url, client):
            with pytest.raises(openai.AuthenticationError):
                client.chat.completions.create(model="m", messages=ALLOWED)
            assert httpx.get(f"{url}/v1/models").status_code == 401
            assert httpx.get(f"{url}/healthz").status_code == 200  # probes need no key
            client.api_key = "proxy-secret"
            client.chat.completions.create(model="m", messages=ALLOWED)
        assert "authorization" not in fake.headers[-1]  # the proxy's key stays with the proxy
        with proxied(guard, fake.base_url, upstream_key="llm-secret") as (_, client):
            client.chat.completions.create(model="m", messages=ALLOWED)
        assert fake.headers[-1]["authorization"] == "Bearer llm-secret"
    assert len(fake.requests) == 2


def test_cli_refuses_bad_upstreams_and_folders(
    tiny_guard: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["proxy", str(tiny_guard), "--upstream", "ftp://llm/v1"])
    assert result.exit_code == 1 and "http:// or https://" in result.output
    result = runner.invoke(app, ["proxy", str(tmp_path), "--upstream", "http://llm"])
    assert result.exit_code == 1 and "not a topicguard model" in result.output
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    args = ["proxy", str(tiny_guard), "--upstream", "http://llm", "--upstream-key-env"]
    result = runner.invoke(app, [*args, "NO_SUCH_KEY"])
    assert result.exit_code == 1 and "NO_SUCH_KEY" in result.output

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("topicguard.proxy.run", lambda *a, **k: calls.append({"args": a} | k))
    monkeypatch.setenv("LLM_KEY", "llm-secret")
    spec = tmp_path / "guard.yaml"
    spec.write_text(yaml.safe_dump(SPEC.model_dump(mode="json") | {"refusal": {"en": "No."}}))
    result = runner.invoke(
        app, [*args, "LLM_KEY", "--spec", str(spec), "--upstream-timeout", "5", "--port", "9"]
    )
    assert result.exit_code == 0, result.output
    assert "llm-secret" not in result.output
    (call,) = calls
    guard, upstream, config = call["args"]
    assert upstream == "http://llm" and config.upstream_key == "llm-secret"
    assert config.upstream_timeout_s == 5 and call["port"] == 9
    assert call["spec"].refusal_text("en") == "No."


def test_decisions_go_to_the_log_with_texts_only_when_asked(
    guard: TopicGuard, tmp_path: Path
) -> None:
    log = tmp_path / "decisions.jsonl"
    with (
        FakeLLM(_echo()) as fake,
        proxied(guard, fake.base_url, decision_log=log, log_texts=True) as (_, client),
    ):
        client.chat.completions.create(model="small-llm", messages=ALLOWED)  # type: ignore[arg-type]
        client.chat.completions.create(model="small-llm", messages=BLOCKED)  # type: ignore[arg-type]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["verdict"] for r in rows] == ["allowed", "blocked"]
    assert rows[1]["text"] == BLOCKED[0]["content"] and rows[0]["lang"] == "en"
    assert rows[0]["model"] == guard.fingerprint and rows[0]["latency_ms"] > 0
    quiet = tmp_path / "quiet.jsonl"
    with (
        FakeLLM(_echo()) as fake,
        proxied(guard, fake.base_url, decision_log=quiet) as (
            _,
            client,
        ),
    ):
        client.chat.completions.create(model="small-llm", messages=ALLOWED)  # type: ignore[arg-type]
    assert "text" not in json.loads(quiet.read_text())

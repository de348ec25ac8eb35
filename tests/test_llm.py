from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fake_llm import FakeLLM, Reply, fake_settings, refusal, refusing, response_format
from pydantic import BaseModel

from topicguard import LLMError
from topicguard.llm import (
    LLMClient,
    LLMSettings,
    describe_mode,
    extract_json,
    resolve_api_key,
    split_reasoning,
)


class Answer(BaseModel):
    verdict: bool


def _settings(url: str, tmp_path: Path, **kwargs: Any) -> LLMSettings:
    return fake_settings(url, tmp_path, **{"max_retries": 3, **kwargs})


def _complete(settings: LLMSettings, **kwargs: Any) -> tuple[Any, LLMClient]:
    async def run() -> tuple[Any, LLMClient]:
        client = LLMClient(settings)
        try:
            result = await client.complete([{"role": "user", "content": "hi"}], **kwargs)
        finally:
            await client.close()
        return result, client

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"verdict": true}', {"verdict": True}),
        ('Sure!\n```json\n{"verdict": false}\n```\nDone.', {"verdict": False}),
        ('The answer is {"verdict": true} as asked.', {"verdict": True}),
        ('{"verdict": tru', None),
        ("no json here", None),
    ],
)
def test_extract_json(text: str, expected: Any) -> None:
    assert extract_json(text) == expected


def test_split_reasoning() -> None:
    assert split_reasoning("<think>hmm, shipping</think>\n\ntrue") == ("hmm, shipping", "true")
    assert split_reasoning("plain") == (None, "plain")
    assert split_reasoning("<think>cut off mid-thought") == ("cut off mid-thought", "")


def test_api_key_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOPICGUARD_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert resolve_api_key(env_file=tmp_path / ".env") is None
    (tmp_path / ".env").write_text("# keys\nexport OPENAI_API_KEY='from-file'\n")
    assert resolve_api_key(env_file=tmp_path / ".env") == "from-file"
    monkeypatch.setenv("TOPICGUARD_API_KEY", "from-env")
    assert resolve_api_key(env_file=tmp_path / ".env") == "from-env"
    assert resolve_api_key("explicit") == "explicit"


def test_remote_endpoint_without_key_fails_before_any_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TOPICGUARD_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LLMError, match="no API key: set TOPICGUARD_API_KEY"):
        LLMClient(_settings("https://api.example.com/v1", tmp_path))


def test_structured_answer_reasoning_usage_and_cache(tmp_path: Path) -> None:
    def reply(request: dict[str, Any], number: int) -> Reply:
        return Reply(content='<think>about parcels</think>\n{"verdict": true}')

    with FakeLLM(reply) as fake:
        settings = _settings(
            fake.base_url, tmp_path, price_input_per_million=1.0, price_output_per_million=2.0
        )
        result, client = _complete(settings, schema=Answer)
        assert result.parsed == Answer(verdict=True)
        assert result.reasoning == "about parcels"
        assert result.content == '{"verdict": true}'
        assert fake.requests[0]["response_format"]["type"] == "json_schema"
        assert client.usage.cost == pytest.approx(10 * 1e-6 + 5 * 2e-6)
        again, client = _complete(settings, schema=Answer)
        assert again.cached and again.parsed == result.parsed
        assert len(fake.requests) == 1  # the second answer came from the cache
        assert client.usage.cached == 1


def _fenced(request: dict[str, Any], number: int) -> Reply:
    return Reply(content='Here you are:\n```json\n{"verdict": false}\n```')


@pytest.mark.parametrize(
    ("refused", "mode"),
    [
        (("json_schema",), "json_object_schema"),  # llama-cpp-python
        (("json_schema", "json_object_schema"), "json_object"),  # no schema beside JSON mode
    ],
)
@pytest.mark.parametrize("status", [400, 422, 500, 200])
def test_falls_back_after_one_refused_call_whatever_the_status(
    tmp_path: Path, status: int, refused: tuple[str, ...], mode: str
) -> None:
    """400 (OpenAI), 422 (FastAPI), 500 (llama-cpp-python), 200 with an error body."""
    with FakeLLM(refusing(_fenced, refused, status)) as fake:
        modes: list[str] = []
        settings = _settings(fake.base_url, tmp_path, max_retries=6)

        async def run() -> tuple[list[Any], LLMClient]:
            client = LLMClient(settings, on_mode=lambda s, mode: modes.append(mode))
            try:
                results = [
                    await client.complete([{"role": "user", "content": f"q{i}"}], schema=Answer)
                    for i in range(3)
                ]
            finally:
                await client.close()
            return results, client

        results, client = asyncio.run(run())
        assert all(r.parsed == Answer(verdict=False) for r in results)
        # one refused call per refused mode, then the mode taken for the rest of the run;
        # no retry spent on them
        assert [response_format(r) for r in fake.requests] == [*refused, mode, mode, mode]
        assert client.usage.retries == 0 and client.usage.failed == 0
        assert client.mode == mode
        assert modes == [mode]


def test_a_server_that_takes_no_structured_output_is_read_from_free_text(
    tmp_path: Path,
) -> None:
    reply = refusing(_fenced, ("json_schema", "json_object_schema", "json_object"), 500)
    with FakeLLM(reply) as fake:
        settings = _settings(fake.base_url, tmp_path)
        result, client = _complete(settings, schema=Answer)
        assert result.parsed == Answer(verdict=False)
        assert [response_format(r) for r in fake.requests] == [
            "json_schema",
            "json_object_schema",
            "json_object",
            None,
        ]
        assert client.mode == "text" and client.usage.retries == 0
        assert describe_mode(client.mode).startswith("free text")


def test_a_plain_500_is_retried_not_taken_for_a_refusal(tmp_path: Path) -> None:
    def reply(request: dict[str, Any], number: int) -> Reply:
        if number <= 2:
            return Reply(status=500, message="CUDA out of memory")
        return Reply(content='{"verdict": true}')

    with FakeLLM(reply) as fake:
        result, client = _complete(_settings(fake.base_url, tmp_path), schema=Answer)
        assert result.parsed == Answer(verdict=True)
        assert [response_format(r) for r in fake.requests] == ["json_schema"] * 3
        assert client.usage.retries == 2 and client.mode == "json_schema"


def test_cached_answers_are_reused_only_under_their_mode(tmp_path: Path) -> None:
    server = {"refuses": ("json_schema",)}

    def reply(request: dict[str, Any], number: int) -> Reply:
        return refusing(_fenced, server["refuses"], 422)(request, number)

    with FakeLLM(reply) as fake:
        _complete(_settings(fake.base_url, tmp_path), schema=Answer)
        assert len(fake.requests) == 2
        # a rerun learns the mode again with one refused call, then finds its answer cached
        again, client = _complete(_settings(fake.base_url, tmp_path), schema=Answer)
        assert again.cached and client.usage.cached == 1
        assert [response_format(r) for r in fake.requests[2:]] == ["json_schema"]
        # the same endpoint and model now take json_schema: the JSON-mode answer is not used
        server["refuses"] = ()
        result, client = _complete(_settings(fake.base_url, tmp_path), schema=Answer)
        assert not result.cached and client.mode == "json_schema"
        assert [response_format(r) for r in fake.requests[3:]] == ["json_schema"]


def test_describe_mode() -> None:
    assert describe_mode("json_schema") == "JSON schema"
    assert describe_mode("json_object") == (
        "JSON mode; the endpoint refused JSON schema, JSON mode held to the schema"
    )


def test_retries_on_429_with_retry_after_500_and_timeouts(tmp_path: Path) -> None:
    def reply(request: dict[str, Any], number: int) -> Reply:
        if number == 1:
            return Reply(status=429, headers={"Retry-After": "0.05"})
        if number == 2:
            return Reply(status=500)
        if number == 3:
            return Reply(content='{"verdict": true}', delay=1.5)  # slower than the timeout
        return Reply(content='{"verdict": true}')

    with FakeLLM(reply) as fake:
        result, client = _complete(_settings(fake.base_url, tmp_path, timeout=0.5), schema=Answer)
        assert result.parsed == Answer(verdict=True)
        assert client.usage.retries == 3
        assert len(fake.requests) == 4


def test_malformed_and_truncated_answers_parse_to_none(tmp_path: Path) -> None:
    def reply(request: dict[str, Any], number: int) -> Reply:
        if "truncated" in request["messages"][-1]["content"]:
            return Reply(content='{"verdict": tr', finish_reason="length")
        return Reply(content="I think it is fine {not json")

    with FakeLLM(reply) as fake:
        result, _ = _complete(_settings(fake.base_url, tmp_path), schema=Answer)
        assert result.parsed is None and result.content.startswith("I think")

        async def truncated() -> Any:
            client = LLMClient(_settings(fake.base_url, tmp_path))
            try:
                return await client.complete(
                    [{"role": "user", "content": "truncated"}], schema=Answer
                )
            finally:
                await client.close()

        result = asyncio.run(truncated())
        assert result.parsed is None and result.finish_reason == "length"


def test_gives_up_after_bounded_retries(tmp_path: Path) -> None:
    with FakeLLM(lambda request, number: Reply(status=503)) as fake:
        with pytest.raises(LLMError, match="still failing after 3 attempts"):
            _complete(_settings(fake.base_url, tmp_path, max_retries=2))
        assert len(fake.requests) == 3
    with pytest.raises(LLMError, match="still failing"):  # nothing listens there any more
        _complete(_settings(fake.base_url, tmp_path, max_retries=1))


def test_an_error_in_a_200_body_is_retried_then_counted_as_failed(tmp_path: Path) -> None:
    overloaded = {"error": {"message": "server overloaded, try again", "type": "server_error"}}

    def reply(request: dict[str, Any], number: int) -> Reply:
        return Reply(body=overloaded) if number <= 2 else Reply(content='{"verdict": true}')

    with FakeLLM(reply) as fake:
        result, client = _complete(_settings(fake.base_url, tmp_path), schema=Answer)
        assert result.parsed == Answer(verdict=True)
        assert client.usage.retries == 2 and client.usage.failed == 0
        assert client.mode == "json_schema"  # not taken for a refusal of the format
    with FakeLLM(lambda request, number: Reply(body=overloaded)) as fake:
        client = LLMClient(_settings(fake.base_url, tmp_path, max_retries=2))

        async def run() -> None:
            try:
                await client.complete([{"role": "user", "content": "hi"}], schema=Answer)
            finally:
                await client.close()

        with pytest.raises(LLMError, match="still failing after 3 attempts.*server overloaded"):
            asyncio.run(run())
        assert len(fake.requests) == 3
        assert client.usage.failed == 1 and client.usage.retries == 2


def test_auth_errors_are_not_retried(tmp_path: Path) -> None:
    with FakeLLM(lambda request, number: Reply(status=401)) as fake:
        with pytest.raises(LLMError, match="rejected the key"):
            _complete(_settings(fake.base_url, tmp_path))
        assert len(fake.requests) == 1


def test_spec_names_the_key_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOPICGUARD_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = _settings("https://api.example.com/v1", tmp_path, api_key_env="MY_DEEPSEEK_KEY")
    with pytest.raises(LLMError, match="set MY_DEEPSEEK_KEY or TOPICGUARD_API_KEY"):
        LLMClient(settings)
    monkeypatch.setenv("MY_DEEPSEEK_KEY", "k")
    LLMClient(settings)  # found


def test_concurrent_fallbacks_step_down_once(tmp_path: Path) -> None:
    def reply(request: dict[str, Any], number: int) -> Reply:
        if request.get("response_format", {}).get("type") == "json_schema":
            return Reply(
                status=400, message="response_format json_schema not supported", delay=0.05
            )
        return Reply(content='{"verdict": true}')

    async def run() -> list[Any]:
        client = LLMClient(_settings(fake.base_url, tmp_path, cache_dir=None))
        try:
            return await asyncio.gather(
                *(
                    client.complete([{"role": "user", "content": f"q{i}"}], schema=Answer)
                    for i in range(8)
                )
            )
        finally:
            await client.close()

    with FakeLLM(reply) as fake:
        results = asyncio.run(run())
    assert all(r.parsed == Answer(verdict=True) for r in results)
    # never stepped past JSON mode held to the schema, however many refusals came back
    assert {response_format(r) for r in fake.requests} == {"json_schema", "json_object_schema"}


def test_other_bad_requests_are_not_format_fallbacks(tmp_path: Path) -> None:
    with FakeLLM(lambda request, number: Reply(status=400, message="prompt too long")) as fake:
        with pytest.raises(LLMError, match="refused the request"):
            _complete(_settings(fake.base_url, tmp_path), schema=Answer)
        assert len(fake.requests) == 1


def test_a_context_length_error_that_mentions_json_is_no_refusal(tmp_path: Path) -> None:
    """Only the error's message, param and detail loc/msg are read: not the request a body
    may echo (response_format and all), nor "schema" in prose under JSON mode + schema."""

    def reply(request: dict[str, Any], number: int) -> Reply:
        if response_format(request) == "json_schema":
            return refusal("json_schema", 500)  # llama-cpp-python: on to JSON mode + schema
        error = {
            "message": "Requested tokens (3100) exceed context window of 2048: shorten the "
            "messages or the JSON schema",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
            "input": {k: request.get(k) for k in ("messages", "response_format")},
        }
        return Reply(status=400, body={"error": error})

    with FakeLLM(reply) as fake:
        client = LLMClient(_settings(fake.base_url, tmp_path))

        async def run() -> None:
            try:
                await client.complete([{"role": "user", "content": "hi"}], schema=Answer)
            finally:
                await client.close()

        with pytest.raises(LLMError, match="refused the request.*context window"):
            asyncio.run(run())
        # one call to learn the mode, one refused for its length: no step down, no retry
        assert [response_format(r) for r in fake.requests] == ["json_schema", "json_object_schema"]
        assert client.mode == "json_object_schema" and client.usage.retries == 0

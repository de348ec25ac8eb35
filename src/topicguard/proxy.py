"""The guard in front of an LLM: an OpenAI-compatible server, ``create_proxy_app(guard,
upstream)``, run by ``topicguard proxy``. A chat app changes only its ``base_url``.

- ``POST /v1/chat/completions``: the guard judges the conversation's latest user message,
  in the context of the user turns before it (``TopicGuard.classify_conversation``).
  Allowed: the body goes upstream unchanged and the answer comes back unchanged: status,
  error bodies, and server-sent events relayed chunk by chunk as they arrive. Blocked: the
  upstream is never called; the proxy answers a ``chat.completion`` (or, when the client
  asked for a stream, ``chat.completion.chunk`` events ending in ``data: [DONE]``) whose
  content is the spec's refusal in the user's language. Every judged answer carries the
  headers ``x-topicguard-verdict`` (allowed or blocked), ``x-topicguard-score`` and
  ``x-topicguard-lang``.
- ``GET /v1/models``: passed through.
- ``GET /healthz`` (the process is up), ``GET /readyz`` (the guard is loaded and the upstream
  answers), ``GET /metrics`` (Prometheus text).

Errors are OpenAI's shape, ``{"error": {"message", "type", "code"}}``: 400 or 413 for a
request that cannot be judged, 502 for an upstream that cannot be reached or breaks off,
504 for one that does not answer within ``upstream_timeout_s``. Upstream errors (429, 500,
...) come back as the upstream sent them. The client's ``Authorization`` header goes
upstream, unless the proxy has a key of its own (then only ``upstream_key`` is sent) or
``upstream_key`` is set (it replaces the client's). Keys are never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from topicguard._exceptions import DataError, LLMError, MissingDependencyError
from topicguard._http import MAX_BODY_BYTES, HttpProblem, Metrics, check_key, read_body, run_app
from topicguard.spec import GuardSpec

if TYPE_CHECKING:
    from topicguard.runtime import Verdict

__all__ = ["ProxyConfig", "create_proxy_app", "guard_spec", "run", "upstream_base"]

logger = logging.getLogger(__name__)

# what a blocked user reads from a guard folder that records no spec
NO_SPEC_REFUSAL = "Sorry, I can't help with that here."
# request headers that belong to one connection (or that we set ourselves), not forwarded
_REQUEST_HOP = frozenset(
    {"host", "content-length", "connection", "keep-alive", "te", "trailer", "transfer-encoding",
     "upgrade", "proxy-authorization", "proxy-connection", "accept-encoding", "authorization"}
)  # fmt: skip
# response headers that the proxy's own server writes itself
_RESPONSE_HOP = frozenset(
    {"content-length", "connection", "keep-alive", "transfer-encoding", "trailer", "upgrade",
     "date", "server", "proxy-authenticate"}
)  # fmt: skip


@dataclass
class ProxyConfig:
    """Everything the proxy needs besides the guard and the upstream; keys are never logged."""

    api_key: str | None = field(default=None, repr=False)  # the proxy's own key
    upstream_key: str | None = field(default=None, repr=False)  # sent upstream as a bearer
    upstream_timeout_s: float = 120.0  # to the whole answer; when streaming, between chunks
    max_body_bytes: int = MAX_BODY_BYTES
    # Chat messages run longer than classify texts; long ones are judged in windows.
    max_chars: int = 16_000
    guard_timeout_s: float = 10.0
    probe_timeout_s: float = 2.0  # the upstream check of start-up and /readyz


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[_Part] | None = None


class ChatRequest(BaseModel):
    """What the proxy reads of a chat request; the rest goes upstream untouched."""

    model_config = ConfigDict(extra="allow")

    messages: list[_Message] = Field(min_length=1)
    model: Any = None
    stream: bool | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    stream_options: dict[str, Any] | None = None


def upstream_base(url: str) -> str:
    """The upstream's API root, ending in ``/v1`` whether or not ``url`` does.

    >>> upstream_base("http://localhost:8080/")
    'http://localhost:8080/v1'
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LLMError(
            f"upstream {url!r} is not an http:// or https:// URL: "
            "pass the LLM server's address, e.g. http://localhost:8080/v1"
        )
    base = url.strip().rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


def guard_spec(guard: Any) -> GuardSpec | None:
    """The spec a guard was trained for, as its folder records it (None when it has none)."""
    raw = (getattr(guard, "metadata", None) or {}).get("spec")
    if not raw:
        return None
    try:
        return GuardSpec.model_validate(raw)
    except ValidationError as exc:
        logger.warning(
            "the spec recorded in the guard folder is unreadable (%d problems); blocked "
            "users get the default refusal (pass --spec guard.yaml)",
            len(exc.errors()),
        )
        return None


def latest_user_text(body: ChatRequest) -> str:
    """The text of the conversation's latest user message; a 400 when there is none."""
    for message in reversed(body.messages):
        if message.role != "user":
            continue
        content = message.content
        if isinstance(content, list):
            content = "\n".join(p.text for p in content if p.type == "text" and p.text)
        if not content or not content.strip():
            raise HttpProblem(400, "the latest user message has no text to judge", "no_text")
        return content
    raise HttpProblem(400, 'messages: no message with role "user" to judge', "no_user_message")


def judge(guard: Any, messages: list[Any]) -> Verdict:
    """The guard's verdict on the conversation's latest user message, with its context."""
    verdict: Verdict = guard.classify_conversation(messages)
    return verdict


def create_proxy_app(
    guard: Any,
    upstream: str,
    config: ProxyConfig | None = None,
    *,
    spec: GuardSpec | None = None,
    transport: Any = None,
) -> Any:
    """The FastAPI app. ``guard``: a loaded ``TopicGuard``; ``upstream``: the LLM server's
    URL, with or without ``/v1``; ``spec`` (default: the one the guard folder records) gives
    the refusal texts; ``transport``: an httpx transport for the upstream (tests)."""
    try:
        import httpx
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse, PlainTextResponse, Response
    except ImportError as exc:
        raise MissingDependencyError(getattr(exc, "name", None) or "fastapi", "serve") from exc

    config = config or ProxyConfig()
    base = upstream_base(upstream)
    spec = spec or guard_spec(guard)
    refusal = spec.refusal_text if spec else (lambda lang: NO_SPEC_REFUSAL)
    if spec and spec.missing_refusals():
        logger.warning(
            "the spec has no refusal for %s: blocked users writing in it get the English one "
            "(add it under refusal: in guard.yaml)",
            ", ".join(spec.missing_refusals()),
        )
    metrics = Metrics(batches=False, upstream=True)
    state: dict[str, Any] = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from concurrent.futures import ThreadPoolExecutor

        timeout = config.upstream_timeout_s
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            transport=transport,
        )
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="topicguard-proxy")
        state.update(client=client, executor=executor, ready=True)
        problem = await probe()
        if problem:
            logger.warning(
                "upstream %s is unreachable (%s); starting anyway: /readyz answers 503 "
                "until it answers",
                base,
                problem,
            )
        logger.info("guarding %s", base)
        try:
            yield
        finally:
            state["ready"] = False
            await client.aclose()
            executor.shutdown(wait=True)

    app = FastAPI(title="topicguard proxy", lifespan=lifespan)

    async def probe() -> str | None:
        """None when the upstream answers HTTP at all (any status), else why not."""
        try:
            await state["client"].get(
                f"{base}/models", headers=auth_header(None), timeout=config.probe_timeout_s
            )
        except httpx.HTTPError as exc:
            return _describe(exc)
        return None

    def auth_header(request: Any) -> dict[str, str]:
        if config.upstream_key:
            return {"authorization": f"Bearer {config.upstream_key}"}
        if request is not None and not config.api_key and "authorization" in request.headers:
            return {"authorization": request.headers["authorization"]}
        return {}

    def upstream_headers(request: Any) -> list[tuple[str, str]]:
        headers = [(k, v) for k, v in request.headers.items() if k not in _REQUEST_HOP]
        headers.append(("accept-encoding", "identity"))  # relay bytes as they come
        headers += auth_header(request).items()
        return headers

    def upstream_failure(exc: BaseException) -> HttpProblem:
        if isinstance(exc, (asyncio.TimeoutError, httpx.TimeoutException)):
            metrics.upstream["timeout"] += 1
            return HttpProblem(
                504,
                f"the upstream {base} did not answer within {config.upstream_timeout_s:g} s",
                "upstream_timeout",
            )
        if isinstance(exc, httpx.ConnectError):
            metrics.upstream["unreachable"] += 1
            message = f"cannot reach the upstream {base}: {_describe(exc)}"
            return HttpProblem(502, message, "upstream_unreachable")
        metrics.upstream["broken"] += 1
        message = f"the upstream {base} broke off its answer: {_describe(exc)}"
        return HttpProblem(502, message, "bad_gateway")

    def relayed(upstream_response: Any, content: bytes | None = None) -> Any:
        """The upstream's answer as ours: its status, headers and body (or stream)."""
        from starlette.background import BackgroundTask
        from starlette.responses import StreamingResponse

        metrics.upstream[str(upstream_response.status_code)] += 1
        if content is not None:
            response = Response(content, status_code=upstream_response.status_code)
        else:
            response = StreamingResponse(
                relay(upstream_response),
                status_code=upstream_response.status_code,
                background=BackgroundTask(upstream_response.aclose),
            )
        response.raw_headers += [
            (k, v) for k, v in upstream_response.headers.raw if k.lower() not in _RESPONSE_HOP_B
        ]
        return response

    async def relay(upstream_response: Any) -> AsyncIterator[bytes]:
        """The upstream's events as they arrive; on a break, an error event the OpenAI
        client raises; closes the upstream stream however the client's ends."""
        import anyio

        try:
            async for chunk in upstream_response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            problem = upstream_failure(exc)
            logger.warning("upstream stream ended early: %s", problem.message)
            error = {"error": _error_body(problem.status, problem.message, problem.code)}
            yield f"data: {json.dumps(error)}\n\n".encode()
        finally:
            with anyio.CancelScope(shield=True):
                await upstream_response.aclose()

    async def forward(request: Any, path: str, method: str, content: bytes | None) -> Any:
        client = state["client"]
        deadline = time.monotonic() + config.upstream_timeout_s
        outgoing = client.build_request(
            method, f"{base}{path}", content=content, headers=upstream_headers(request)
        )
        try:
            upstream_response = await asyncio.wait_for(
                client.send(outgoing, stream=True), config.upstream_timeout_s
            )
        except (asyncio.TimeoutError, httpx.HTTPError) as exc:
            raise upstream_failure(exc) from exc
        if upstream_response.headers.get("content-type", "").startswith("text/event-stream"):
            return relayed(upstream_response)
        try:
            body = await asyncio.wait_for(
                upstream_response.aread(), max(deadline - time.monotonic(), 0.001)
            )
        except (asyncio.TimeoutError, httpx.HTTPError) as exc:
            raise upstream_failure(exc) from exc
        finally:
            await upstream_response.aclose()
        return relayed(upstream_response, body)

    async def judged(request: Any) -> Any:
        check_key(request, config.api_key)
        raw = await read_body(request, config.max_body_bytes)
        payload, body = _parse(raw)
        text = latest_user_text(body)
        if len(text) > config.max_chars:
            raise HttpProblem(
                413,
                f"the latest user message has {len(text)} characters: at most {config.max_chars}",
                "message_too_long",
            )
        loop = asyncio.get_running_loop()
        try:
            verdict = await asyncio.wait_for(
                loop.run_in_executor(state["executor"], judge, state["guard"], payload["messages"]),
                config.guard_timeout_s,
            )
        except asyncio.TimeoutError:
            raise HttpProblem(
                503,
                f"no verdict within {config.guard_timeout_s:g} s: the guard is overloaded",
                "guard_overloaded",
            ) from None
        except DataError as exc:
            raise HttpProblem(400, str(exc), "invalid_messages") from exc
        metrics.observe_verdict(verdict.allowed)
        headers = {
            "x-topicguard-verdict": "allowed" if verdict.allowed else "blocked",
            "x-topicguard-score": f"{verdict.score:.4f}",
            "x-topicguard-lang": verdict.lang or "und",
        }
        try:
            if verdict.allowed:
                response = await forward(request, "/chat/completions", "POST", raw)
            else:
                response = _refusal_response(body, refusal(verdict.lang), Response)
        except HttpProblem as problem:
            response = _error_response(problem, JSONResponse)
        response.headers.update(headers)
        return response

    async def chat_completions(request: Any) -> Any:
        started = time.perf_counter()
        try:
            response = await judged(request)
        except HttpProblem as problem:
            response = _error_response(problem, JSONResponse)
        except Exception:  # noqa: BLE001 - answer in JSON and keep serving
            logger.exception("the proxy failed on a request")
            failed = HttpProblem(500, "the proxy failed on this request; see its log", "error")
            response = _error_response(failed, JSONResponse)
        metrics.observe_request(response.status_code, time.perf_counter() - started)
        return response

    async def models(request: Any) -> Any:
        try:
            check_key(request, config.api_key)
            return await forward(request, "/models", "GET", None)
        except HttpProblem as problem:
            return _error_response(problem, JSONResponse)

    async def healthz(request: Any) -> Any:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Any) -> Any:
        if not state["ready"]:
            return JSONResponse({"status": "starting"}, status_code=503)
        problem = await probe()
        status = {"status": "ready" if problem is None else "upstream unreachable"}
        status |= {"guard": "loaded", "upstream": base}
        if problem:
            status["problem"] = problem
        return JSONResponse(status, status_code=200 if problem is None else 503)

    async def prometheus(request: Any) -> Any:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    state["guard"] = guard
    # Plain Starlette routes: the body is read and checked here, at less cost per request
    # than FastAPI's parameter machinery.
    app.add_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_route("/v1/models", models, methods=["GET"])
    app.add_route("/healthz", healthz, methods=["GET"])
    app.add_route("/readyz", readyz, methods=["GET"])
    app.add_route("/metrics", prometheus, methods=["GET"])
    return app


_RESPONSE_HOP_B = frozenset(h.encode() for h in _RESPONSE_HOP)


def _parse(raw: bytes) -> tuple[dict[str, Any], ChatRequest]:
    """The body as JSON (what the guard reads) and as checked by :class:`ChatRequest`."""
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpProblem(400, f"the body is not JSON: {exc}", "invalid_json") from None
    try:
        return payload, ChatRequest.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise HttpProblem(400, problems, "invalid_request") from None


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _error_body(status: int, message: str, code: str) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "upstream_error"
    if status == 401:
        kind = "authentication_error"
    elif status in (500, 503):
        kind = "server_error"
    return {"message": message, "type": kind, "code": code}


def _error_response(problem: HttpProblem, json_response: Any) -> Any:
    body = {"error": _error_body(problem.status, problem.message, problem.code)}
    return json_response(body, status_code=problem.status)


def _refusal_response(body: ChatRequest, text: str, response_class: Any) -> Any:
    """The proxy's own answer to a blocked request: a ``chat.completion``, or the same as
    ``chat.completion.chunk`` events ending in ``[DONE]`` when the client asked for a stream."""
    ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    model = body.model if isinstance(body.model, str) else "topicguard"
    head = {"id": ident, "created": int(time.time()), "model": model}
    choices = range(body.n or 1)
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    if not body.stream:
        message = {"role": "assistant", "content": text}
        completion = head | {
            "object": "chat.completion",
            "choices": [
                {"index": i, "message": message, "logprobs": None, "finish_reason": "stop"}
                for i in choices
            ],
            "usage": usage,
        }
        return response_class(json.dumps(completion), media_type="application/json")
    deltas: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": ""}, None),
        ({"content": text}, None),
        ({}, "stop"),
    ]
    events = [
        head
        | {
            "object": "chat.completion.chunk",
            "choices": [
                {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
                for i in choices
            ],
        }
        for delta, finish in deltas
    ]
    if (body.stream_options or {}).get("include_usage"):
        events.append(head | {"object": "chat.completion.chunk", "choices": [], "usage": usage})
    stream = "".join(f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events)
    return response_class(stream + "data: [DONE]\n\n", media_type="text/event-stream")


def run(
    guard: Any,
    upstream: str,
    config: ProxyConfig | None = None,
    *,
    host: str,
    port: int,
    spec: GuardSpec | None = None,
) -> None:
    """Serve until interrupted; in-flight requests finish before the process exits."""
    run_app(create_proxy_app(guard, upstream, config, spec=spec), host=host, port=port)

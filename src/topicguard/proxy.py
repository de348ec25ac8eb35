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
  ``x-topicguard-lang``, and ``server-timing: guard;dur=MS``, the guard's own time.
- ``GET /v1/models``: passed through.
- ``GET /healthz`` (the process is up), ``GET /readyz`` (the guard is loaded and the upstream
  answers), ``GET /metrics`` (Prometheus text).
- ``GET /``: the web page (:mod:`topicguard.ui`), unless ``ui`` is off.

Errors are OpenAI's shape, ``{"error": {"message", "type", "code"}}``: 400 or 413 for a
request that cannot be judged, 502 for an upstream that cannot be reached or breaks off,
504 for one that does not answer within ``upstream_timeout_s``. Upstream errors (429, 500,
...) come back as the upstream sent them. The client's ``Authorization`` header goes
upstream, unless the proxy has a key of its own (then only ``upstream_key`` is sent) or
``upstream_key`` is set (it replaces the client's). Keys are never logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from topicguard._exceptions import DataError, LLMError, MissingDependencyError
from topicguard._http import (
    MAX_BODY_BYTES,
    HttpProblem,
    Metrics,
    check_key,
    check_one_writer,
    openai_error,
    read_body,
    run_app,
    run_workers,
    validation_problems,
    worker_threads,
)
from topicguard._upstream import Upstream
from topicguard.decisions import DEFAULT_MAX_MB
from topicguard.spec import GuardSpec

if TYPE_CHECKING:
    from topicguard.verdict import Verdict

__all__ = ["ProxyConfig", "create_proxy_app", "guard_spec", "run", "upstream_base"]

logger = logging.getLogger(__name__)

# what a blocked user reads from a guard folder that records no spec
NO_SPEC_REFUSAL = "Sorry, I can't help with that here."
# request headers that belong to one connection (or that we set ourselves), not forwarded
_REQUEST_HOP = frozenset(
    {"host", "content-length", "connection", "keep-alive", "te", "trailer", "transfer-encoding",
     "upgrade", "proxy-authorization", "proxy-connection", "accept-encoding", "authorization"}
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
    # every verdict appended to a decision log (topicguard.decisions), off the request path
    decision_log: Path | None = None
    log_texts: bool = False  # personal data: only when `topicguard feedback` will need them
    log_max_mb: float = DEFAULT_MAX_MB
    ui: bool = True  # the web page at /
    review_dir: Path | None = None  # where the page keeps review files (None: no reviewing)
    report_dir: Path | None = None  # an evaluation report for the guard card


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
    metadata = getattr(guard, "metadata", None)
    raw = metadata.spec if metadata is not None else None
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
        from fastapi import FastAPI
    except ImportError as exc:
        raise MissingDependencyError("fastapi", "serve") from exc
    try:
        import httpx  # noqa: F401 - checked here, used by topicguard._upstream
    except ImportError as exc:
        raise MissingDependencyError("httpx", "serve") from exc

    proxy = _Proxy(guard, upstream_base(upstream), config or ProxyConfig(), spec, transport)
    app = FastAPI(title="topicguard proxy", lifespan=proxy.lifespan)
    # Plain Starlette routes: the body is read and checked here, at less cost per request
    # than FastAPI's parameter machinery.
    app.add_route("/v1/chat/completions", proxy.chat_completions, methods=["POST"])
    app.add_route("/v1/models", proxy.models, methods=["GET"])
    app.add_route("/healthz", proxy.healthz, methods=["GET"])
    app.add_route("/readyz", proxy.readyz, methods=["GET"])
    app.add_route("/metrics", proxy.prometheus, methods=["GET"])
    if proxy.config.ui:
        proxy.mount_ui(app)
    return app


class _Proxy:
    """The proxy's state and its request handlers."""

    def __init__(
        self,
        guard: Any,
        base: str,
        config: ProxyConfig,
        spec: GuardSpec | None,
        transport: Any,
    ) -> None:
        self.guard = guard
        self.base = base
        self.config = config
        self.spec = spec or guard_spec(guard)
        if self.spec and self.spec.missing_refusals():
            logger.warning(
                "the spec has no refusal for %s: blocked users writing in them get the English "
                "one (add them under refusal: in guard.yaml and pass it with --spec)",
                ", ".join(self.spec.missing_refusals()),
            )
        self.metrics = Metrics(batches=False, upstream=True)
        self.transport = transport
        self.upstream: Upstream | None = None  # while serving
        self.executor: Any = None
        self.decisions: Any = None  # a DecisionLog, while serving with one

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        from concurrent.futures import ThreadPoolExecutor

        self.upstream = Upstream(
            self.base,
            timeout_s=self.config.upstream_timeout_s,
            probe_timeout_s=self.config.probe_timeout_s,
            metrics=self.metrics,
            transport=self.transport,
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="topicguard-proxy")
        if self.config.decision_log is not None:
            from topicguard.decisions import DecisionLog

            self.decisions = DecisionLog(
                self.config.decision_log,
                texts=self.config.log_texts,
                max_mb=self.config.log_max_mb,
                model=getattr(self.guard, "fingerprint", None),
            )
        problem = await self.upstream.probe(self._auth(None))
        if problem:
            logger.warning(
                "upstream %s is unreachable (%s); starting anyway: /readyz answers 503 "
                "until it answers",
                self.base,
                problem,
            )
        try:
            yield
        finally:
            upstream, self.upstream = self.upstream, None
            await upstream.aclose()
            self.executor.shutdown(wait=True)
            if self.decisions is not None:
                self.decisions.close()

    def mount_ui(self, app: Any) -> None:
        """The web page, running its guard work on the proxy's guard thread."""
        from topicguard.ui import UiConfig, mount_ui, worker_runner

        def ready() -> tuple[Any, Any] | None:
            return (self.guard, self.executor) if self.upstream is not None else None

        ui = UiConfig(
            model_dir=Path(getattr(self.guard, "path", "guard")),
            api_key=self.config.api_key,
            review_dir=self.config.review_dir,
            report_dir=self.config.report_dir,
            max_chars=self.config.max_chars,
        )
        mount_ui(app, ui, worker_runner(ready, self.config.guard_timeout_s))

    def refusal(self, lang: str | None) -> str:
        return self.spec.refusal_text(lang) if self.spec else NO_SPEC_REFUSAL

    def _auth(self, request: Any) -> list[tuple[str, str]]:
        """The upstream's Authorization: its own key, else the client's (unless that is the
        key of the proxy itself)."""
        if self.config.upstream_key:
            return [("authorization", f"Bearer {self.config.upstream_key}")]
        if request is not None and not self.config.api_key:
            supplied = request.headers.get("authorization")
            return [("authorization", supplied)] if supplied else []
        return []

    def _headers(self, request: Any) -> list[tuple[str, str]]:
        headers = [(k, v) for k, v in request.headers.items() if k not in _REQUEST_HOP]
        headers.append(("accept-encoding", "identity"))  # relay bytes as they come
        return headers + self._auth(request)

    async def chat_completions(self, request: Any) -> Any:
        started = time.perf_counter()
        try:
            response = await self._chat(request)
        except HttpProblem as problem:
            response = _error_response(problem)
        except Exception:  # noqa: BLE001 - answer in JSON and keep serving
            logger.exception("the proxy failed on a request")
            failed = HttpProblem(500, "the proxy failed on this request; see its log", "error")
            response = _error_response(failed)
        self.metrics.observe_request(response.status_code, time.perf_counter() - started)
        return response

    async def _chat(self, request: Any) -> Any:
        check_key(request, self.config.api_key)
        raw = await read_body(request, self.config.max_body_bytes)
        payload, body = _parse(raw)
        text = latest_user_text(body)
        if len(text) > self.config.max_chars:
            message = f"the latest user message has {len(text)} characters: at most "
            raise HttpProblem(413, f"{message}{self.config.max_chars}", "message_too_long")
        judging = time.perf_counter()
        verdict = await self._judge(payload["messages"])
        guard_ms = (time.perf_counter() - judging) * 1000
        self.metrics.observe_verdict(verdict.allowed)
        if self.decisions is not None:
            self.decisions.record(verdict, latency_ms=guard_ms)
        try:
            if verdict.allowed:
                response = await self._forward(request, "POST", "/chat/completions", raw)
            else:
                response = _refusal_response(body, self.refusal(verdict.lang))
        except HttpProblem as problem:
            response = _error_response(problem)
        response.headers.update(
            {
                "x-topicguard-verdict": "allowed" if verdict.allowed else "blocked",
                "x-topicguard-score": f"{verdict.score:.4f}",
                "x-topicguard-lang": verdict.lang or "und",
            }
        )
        response.headers.append("server-timing", f"guard;dur={guard_ms:.3f}")
        return response

    async def _judge(self, messages: list[Any]) -> Verdict:
        """The guard's verdict, on its own thread (inference would block the event loop)."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self.executor, judge, self.guard, messages),
                self.config.guard_timeout_s,
            )
        except asyncio.TimeoutError:
            message = f"no verdict within {self.config.guard_timeout_s:g} s: the guard is busy"
            raise HttpProblem(503, message, "guard_overloaded") from None
        except DataError as exc:
            raise HttpProblem(400, str(exc), "invalid_messages") from exc

    async def _forward(self, request: Any, method: str, path: str, body: bytes | None) -> Any:
        if self.upstream is None:
            raise HttpProblem(503, "the proxy is starting or stopping", "not_ready")
        return await self.upstream.forward(method, path, self._headers(request), body)

    async def models(self, request: Any) -> Any:
        try:
            check_key(request, self.config.api_key)
            return await self._forward(request, "GET", "/models", None)
        except HttpProblem as problem:
            return _error_response(problem)

    async def healthz(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if self.upstream is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        problem = await self.upstream.probe(self._auth(None))
        status = {"status": "ready" if problem is None else "upstream unreachable"}
        status |= {"guard": "loaded", "upstream": self.base}
        if problem:
            status["problem"] = problem
        return JSONResponse(status, status_code=200 if problem is None else 503)

    async def prometheus(self, request: Any) -> Any:
        from starlette.responses import PlainTextResponse

        text = self.metrics.render()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


def _parse(raw: bytes) -> tuple[dict[str, Any], ChatRequest]:
    """The body as JSON (what the guard reads) and as checked by :class:`ChatRequest`."""
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpProblem(400, f"the body is not JSON: {exc}", "invalid_json") from None
    try:
        return payload, ChatRequest.model_validate(payload)
    except ValidationError as exc:
        raise HttpProblem(400, validation_problems(exc), "invalid_request") from None


def _error_response(problem: HttpProblem) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(openai_error(problem), status_code=problem.status)


def _refusal_response(body: ChatRequest, text: str) -> Any:
    """The proxy's own answer to a blocked request: a ``chat.completion``, or the same as
    ``chat.completion.chunk`` events ending in ``[DONE]`` when the client asked for a stream."""
    from starlette.responses import Response

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
        return Response(json.dumps(completion), media_type="application/json")
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
    return Response(stream + "data: [DONE]\n\n", media_type="text/event-stream")


def run(
    guard: Any,
    upstream: str,
    config: ProxyConfig | None = None,
    *,
    host: str,
    port: int,
    spec: GuardSpec | None = None,
    workers: int = 1,
    threads: int | None = None,
) -> None:
    """Serve until interrupted; in-flight requests finish before the process exits.

    ``workers`` > 1: that many processes share the port, each loading its own copy of
    ``guard`` (from its folder, same backend) with ``threads`` inference threads (default:
    the cores shared out among them)."""
    config = config or ProxyConfig()
    if workers <= 1:
        run_app(create_proxy_app(guard, upstream, config, spec=spec), host=host, port=port)
        return
    check_one_writer(config.decision_log, config.review_dir)
    fields = {k: v for k, v in dataclasses.asdict(config).items() if not k.endswith("key")}
    setup = {
        "model_dir": str(guard.path),
        "backend": guard.backend_name,
        "threads": worker_threads(workers, threads),
        "second_opinion": guard.multilingual is None or guard.second_opinion_band is not None,
        "upstream": upstream,
        "spec": spec.model_dump(mode="json") if spec is not None else None,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in fields.items()},
    }
    env = {_SETUP_ENV: json.dumps(setup)}
    for name, value in ((_KEY_ENV, config.api_key), (_UPSTREAM_KEY_ENV, config.upstream_key)):
        if value:
            env[name] = value
    run_workers(f"{__name__}:app_from_environment", host=host, port=port, workers=workers, env=env)


_SETUP_ENV = "TOPICGUARD_PROXY_SETUP"
_KEY_ENV = "TOPICGUARD_PROXY_API_KEY"  # keys travel in variables of their own, never in JSON
_UPSTREAM_KEY_ENV = "TOPICGUARD_PROXY_UPSTREAM_KEY"


def app_from_environment() -> Any:
    """The app of one worker process, set up by :func:`run` through the environment."""
    from topicguard.runtime import TopicGuard

    setup = json.loads(os.environ[_SETUP_ENV])
    guard = TopicGuard.load(
        setup["model_dir"],
        backend=setup["backend"],
        threads=setup["threads"],
        second_opinion=setup["second_opinion"],
    )
    fields = setup["config"]
    for name in ("decision_log", "review_dir", "report_dir"):  # the Path fields
        if fields.get(name) is not None:
            fields[name] = Path(fields[name])
    config = ProxyConfig(
        **fields,
        api_key=os.environ.get(_KEY_ENV) or None,
        upstream_key=os.environ.get(_UPSTREAM_KEY_ENV) or None,
    )
    spec = GuardSpec.model_validate(setup["spec"]) if setup["spec"] is not None else None
    return create_proxy_app(guard, setup["upstream"], config, spec=spec)

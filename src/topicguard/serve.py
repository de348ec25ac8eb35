"""The guard as an HTTP service: ``create_app(config) -> FastAPI``, run by ``topicguard serve``.

- ``POST /v1/classify`` with ``{"text": "…"}``, ``{"texts": [...]}`` or
  ``{"messages": [...]}`` (one conversation, an OpenAI message list, judged by
  ``TopicGuard.classify_conversation``) →
  ``{"results": [{"label", "score", "allowed"}], "model": …}``
- ``GET /healthz`` (the process is up), ``GET /readyz`` (the model is loaded and warm),
  ``GET /metrics`` (Prometheus text: requests, latency, verdicts, batch sizes; with
  ``--workers N``, summed over the worker processes)
- ``GET /``: the web page (:mod:`topicguard.ui`: try it, guard card, review), unless ``ui``
  is off

Concurrent requests are gathered into micro-batches and classified off the event loop on
one worker thread. Optional bearer-token auth (constant-time comparison). Limits on texts
per request, characters per text and body size answer 413 or 422 with a JSON error, never
500. On shutdown, requests already in flight finish first. With ``decision_log`` set, every
verdict is also appended to a decision log (:mod:`topicguard.decisions`) off the request path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from topicguard._exceptions import DataError, MissingDependencyError
from topicguard._http import (
    MAX_BODY_BYTES,
    HttpProblem,
    check_key,
    check_one_writer,
    read_body,
    run_app,
    run_workers,
    validation_problems,
    worker_threads,
)
from topicguard._http import Metrics as _Metrics
from topicguard.decisions import DEFAULT_MAX_MB

__all__ = ["ServeConfig", "create_app"]

logger = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    """Everything the service needs; the API key is never logged."""

    model_dir: Path
    backend: str = "auto"
    threads: int | None = None
    second_opinion: bool = True
    api_key: str | None = field(default=None, repr=False)
    max_texts: int = 64
    max_chars: int = 4000
    max_body_bytes: int = MAX_BODY_BYTES
    max_batch: int = 64
    batch_wait_ms: float = 0.0
    request_timeout_s: float = 10.0
    max_messages: int = 256
    decision_log: Path | None = None
    log_texts: bool = False
    log_max_mb: float = DEFAULT_MAX_MB
    ui: bool = True  # the web page at /
    review_dir: Path | None = None  # where the page keeps review files (None: no reviewing)
    report_dir: Path | None = None  # an evaluation report for the guard card


class _Batcher:
    """Gathers the texts of concurrent requests into batches for one worker thread."""

    def __init__(self, guard: Any, config: ServeConfig, metrics: _Metrics) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.guard = guard
        self.config = config
        self.metrics = metrics
        self.queue: asyncio.Queue[tuple[list[str], asyncio.Future[Any]]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="topicguard")
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def classify(self, texts: list[str]) -> list[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return list(await future)

    async def classify_conversation(self, messages: list[Any]) -> Any:
        """One conversation's verdict, on the same worker thread as the batches."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.guard.classify_conversation, messages)

    async def stop(self) -> None:
        while not self.queue.empty():  # let queued requests finish
            await asyncio.sleep(0.01)
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            size = len(items[0][0])
            # Take what else is already queued; while the worker is busy classifying, new
            # requests queue up, so batches grow with the load and add no wait when idle.
            if self.config.batch_wait_ms > 0:
                await asyncio.sleep(self.config.batch_wait_ms / 1000)
            while not self.queue.empty():
                texts_next, _ = self.queue._queue[0]  # type: ignore[attr-defined]
                if size + len(texts_next) > self.config.max_batch:
                    break
                item = self.queue.get_nowait()
                items.append(item)
                size += len(item[0])
            items = [item for item in items if not item[1].done()]  # timed out: skip
            if not items:
                continue
            texts = [t for item_texts, _ in items for t in item_texts]
            self.metrics.observe_batch(len(texts))
            # Requests arrive in random lengths: the model runs them in length-sorted groups of
            # 8, which pads far less than one group of 64 (on 2 cores: 270 -> 500 requests/s).
            classify = functools.partial(self.guard.classify, batch_size=8)
            try:
                verdicts = await loop.run_in_executor(self.executor, classify, texts)
            except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for item_texts, future in items:
                if not future.done():
                    future.set_result(verdicts[start : start + len(item_texts)])
                start += len(item_texts)


class ClassifyRequest(BaseModel):
    """``{"text": "…"}``, ``{"texts": [...]}`` or ``{"messages": [...]}``."""

    text: str | None = Field(default=None, description="one text to judge")
    texts: list[str] | None = Field(default=None, description="several texts to judge")
    messages: list[dict[str, Any]] | None = Field(
        default=None,
        description="one conversation (OpenAI messages): its latest user message is judged, "
        "in the context of the user turns before it",
    )

    @model_validator(mode="after")
    def _one_of(self) -> ClassifyRequest:
        if sum(x is not None for x in (self.text, self.texts, self.messages)) != 1:
            raise ValueError('send exactly one of "text", "texts" or "messages"')
        return self


class Result(BaseModel):
    label: str
    score: float
    allowed: bool
    lang: str | None = Field(default=None, description="detected language (und: no letters)")
    lang_supported: bool | None = Field(
        default=None, description="whether the guard's spec lists the detected language"
    )
    context: bool | None = Field(
        default=None, description="true when an earlier user turn let this follow-up through"
    )


class ClassifyResponse(BaseModel):
    results: list[Result]
    model: str


def create_app(config: ServeConfig, *, guard: Any = None, batcher: Any = None) -> Any:
    """The FastAPI app. ``guard`` (a loaded ``TopicGuard``) skips loading, for tests.
    ``batcher(guard, config, metrics)`` builds what gathers requests into batches (default:
    one worker thread; Ray Serve's ``@serve.batch`` in :mod:`topicguard.integrations.ray`):
    an object with ``start()``, ``async classify(texts)``,
    ``async classify_conversation(messages)`` and ``async stop()``."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, PlainTextResponse
    except ImportError as exc:
        raise MissingDependencyError("fastapi", "serve") from exc

    state: dict[str, Any] = {"ready": False}
    metrics = _Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        from topicguard.runtime import TopicGuard

        loaded = guard
        if loaded is None:
            loaded = await asyncio.to_thread(
                TopicGuard.load,
                config.model_dir,
                backend=config.backend,
                threads=config.threads,
                second_opinion=config.second_opinion,
            )
        decisions = None
        if config.decision_log is not None:
            from topicguard.decisions import DecisionLog

            decisions = DecisionLog(
                config.decision_log,
                texts=config.log_texts,
                max_mb=config.log_max_mb,
                model=getattr(loaded, "fingerprint", None),
            )
        batching = (batcher or _Batcher)(loaded, config, metrics)
        batching.start()
        state.update(guard=loaded, batcher=batching, decisions=decisions, ready=True)
        logger.info("serving %s (%s backend)", config.model_dir, loaded.backend_name)
        try:
            yield
        finally:
            state["ready"] = False
            await batching.stop()
            if decisions is not None:
                decisions.close()

    app = FastAPI(title="topicguard", lifespan=lifespan)

    def error(status: int, message: str) -> Any:
        return JSONResponse(status_code=status, content={"error": message})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Any:
        if not state["ready"]:
            return error(503, "the model is still loading")
        # the process id tells which of `--workers N` processes answered
        return {"status": "ready", "backend": state["guard"].backend_name, "pid": os.getpid()}

    @app.get("/metrics")
    async def prometheus() -> Any:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    async def classify(request: Request) -> Any:
        # The body is read and validated here rather than by a middleware and FastAPI's
        # parameter machinery: those cost more per request than the int8 model itself.
        started = time.perf_counter()
        try:
            response = await _classify(request)
        except Exception:  # noqa: BLE001 - answer in JSON and keep serving
            logger.exception("classification failed")
            response = error(500, "the guard failed on this request; see the server log")
        metrics.observe_request(response.status_code, time.perf_counter() - started)
        return response

    # FastAPI reads the parameter's type from the annotation; with postponed annotations
    # and fastapi imported lazily, hand it the class itself.
    classify.__annotations__["request"] = Request
    app.post("/v1/classify", response_model=ClassifyResponse)(classify)

    async def _classify(request: Request) -> Any:
        started = time.perf_counter()
        try:
            check_key(request, config.api_key)
            raw = await read_body(request, config.max_body_bytes)
        except HttpProblem as problem:
            return error(problem.status, problem.message)
        try:
            body = ClassifyRequest.model_validate_json(raw)
        except ValidationError as exc:
            return error(422, validation_problems(exc))
        if body.messages is not None:
            return await _classify_messages(body.messages, started)
        texts = [body.text] if body.text is not None else list(body.texts or [])
        if not texts:
            return error(422, "texts: send at least one text")
        if len(texts) > config.max_texts:
            return error(413, f"{len(texts)} texts: at most {config.max_texts} per request")
        for i, text in enumerate(texts):
            if not text.strip():
                return error(422, f"text {i + 1} is empty")
            if len(text) > config.max_chars:
                return error(
                    413, f"text {i + 1} has {len(text)} characters: at most {config.max_chars}"
                )
        return await _answer(lambda batcher: batcher.classify(texts), started)

    async def _classify_messages(messages: list[dict[str, Any]], started: float) -> Any:
        from topicguard.conversations import user_texts

        if len(messages) > config.max_messages:
            return error(
                413, f"{len(messages)} messages: at most {config.max_messages} per conversation"
            )
        try:
            texts = user_texts(messages)
        except DataError as exc:
            return error(422, f"messages: {exc}")
        for text in texts:
            if len(text) > config.max_chars:
                return error(
                    413, f"a user message has {len(text)} characters: at most {config.max_chars}"
                )

        async def one(batcher: Any) -> list[Any]:
            return [await batcher.classify_conversation(messages)]

        return await _answer(one, started)

    async def _answer(judge: Any, started: float) -> Any:
        """The verdicts of ``judge(batcher)`` as the classify response (text left out),
        or a 503 while the model loads or when the guard is too busy to answer in time."""
        if not state["ready"]:
            return error(503, "the model is still loading")
        try:
            verdicts = await asyncio.wait_for(judge(state["batcher"]), config.request_timeout_s)
        except asyncio.TimeoutError:
            return error(
                503, f"no answer within {config.request_timeout_s} s: the guard is overloaded"
            )
        _observe(verdicts, started)
        results = [
            {k: v for k, v in verdict.to_dict().items() if k != "text"} for verdict in verdicts
        ]
        return JSONResponse({"results": results, "model": str(config.model_dir.name)})

    def _observe(verdicts: list[Any], started: float) -> None:
        """Count the verdicts and queue them for the decision log (never waits)."""
        latency_ms = (time.perf_counter() - started) * 1000
        decisions = state.get("decisions")
        for verdict in verdicts:
            metrics.observe_verdict(verdict.allowed)
            if decisions is not None:
                decisions.record(verdict, latency_ms=latency_ms)

    if config.ui:
        _mount_ui(app, config, state)
    return app


def _mount_ui(app: Any, config: ServeConfig, state: dict[str, Any]) -> None:
    """The web page, running its guard work on the batcher's worker thread."""
    from topicguard.ui import UiConfig, mount_ui, worker_runner

    def ready() -> tuple[Any, Any] | None:
        return (state["guard"], state["batcher"].executor) if state["ready"] else None

    ui = UiConfig(
        model_dir=config.model_dir,
        api_key=config.api_key,
        review_dir=config.review_dir,
        report_dir=config.report_dir,
        max_chars=config.max_chars,
    )
    mount_ui(app, ui, worker_runner(ready, config.request_timeout_s))


def run(config: ServeConfig, *, host: str, port: int, guard: Any = None, workers: int = 1) -> None:
    """Serve until interrupted; in-flight requests finish before the process exits.

    ``workers`` > 1: that many processes share the port, each loading its own guard with
    ``config.threads`` inference threads (default: the cores shared out among them)."""
    if workers <= 1:
        run_app(create_app(config, guard=guard), host=host, port=port)
        return
    check_one_writer(config.decision_log, config.review_dir)
    config = dataclasses.replace(config, threads=worker_threads(workers, config.threads))
    env = {_CONFIG_ENV: _config_to_json(config)}
    if config.api_key:
        env[_KEY_ENV] = config.api_key
    run_workers(f"{__name__}:app_from_environment", host=host, port=port, workers=workers, env=env)


_CONFIG_ENV = "TOPICGUARD_SERVE_CONFIG"
_KEY_ENV = "TOPICGUARD_SERVE_API_KEY"  # the key travels as the CLI reads it, not in the JSON


def app_from_environment() -> Any:
    """The app of one worker process, configured by :func:`run` through the environment."""
    return create_app(_config_from_json(os.environ[_CONFIG_ENV], os.environ.get(_KEY_ENV)))


def _config_to_json(config: ServeConfig) -> str:
    fields = dataclasses.asdict(config)
    fields.pop("api_key")
    return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in fields.items()})


def _config_from_json(text: str, api_key: str | None) -> ServeConfig:
    fields = json.loads(text)
    for name in ("model_dir", "decision_log", "review_dir", "report_dir"):
        if fields.get(name) is not None:
            fields[name] = Path(fields[name])
    return ServeConfig(**fields, api_key=api_key or None)

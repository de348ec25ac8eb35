"""The guard as an HTTP service: ``create_app(config) -> FastAPI``, run by ``topicguard serve``.

- ``POST /v1/classify`` with ``{"text": "…"}`` or ``{"texts": [...]}`` →
  ``{"results": [{"label", "score", "allowed"}], "model": …}``
- ``GET /healthz`` (the process is up), ``GET /readyz`` (the model is loaded and warm),
  ``GET /metrics`` (Prometheus text: requests, latency, verdicts, batch sizes)

Concurrent requests are gathered into micro-batches and classified off the event loop on
one worker thread. Optional bearer-token auth (constant-time comparison). Limits on texts
per request, characters per text and body size answer 413 or 422 with a JSON error, never
500. On shutdown, requests already in flight finish first.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from topicguard._exceptions import MissingDependencyError

__all__ = ["ServeConfig", "create_app"]

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


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
    max_body_bytes: int = 1_000_000
    max_batch: int = 64
    batch_wait_ms: float = 0.0
    request_timeout_s: float = 10.0


class _Metrics:
    """Counters and histograms in Prometheus' text format, without a dependency."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.verdicts: Counter[str] = Counter()
        self.latency = [0] * (len(_LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.batches = [0] * (len(_BATCH_BUCKETS) + 1)
        self.batch_sum = 0

    def observe_request(self, status: int, seconds: float) -> None:
        self.requests[str(status)] += 1
        self.latency[_bucket(_LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def observe_batch(self, size: int) -> None:
        self.batches[_bucket(_BATCH_BUCKETS, size)] += 1
        self.batch_sum += size

    def render(self) -> str:
        lines = ["# TYPE topicguard_requests_total counter"]
        lines += [
            f'topicguard_requests_total{{status="{s}"}} {n}'
            for s, n in sorted(self.requests.items())
        ]
        lines.append("# TYPE topicguard_verdicts_total counter")
        lines += [
            f'topicguard_verdicts_total{{allowed="{a}"}} {self.verdicts[a]}'
            for a in ("true", "false")
        ]
        lines += _histogram(
            "topicguard_request_seconds", _LATENCY_BUCKETS, self.latency, self.latency_sum
        )
        lines += _histogram(
            "topicguard_batch_size", _BATCH_BUCKETS, self.batches, float(self.batch_sum)
        )
        return "\n".join(lines) + "\n"


def _bucket(bounds: tuple[float, ...], value: float) -> int:
    for i, bound in enumerate(bounds):
        if value <= bound:
            return i
    return len(bounds)


def _histogram(name: str, bounds: tuple[float, ...], counts: list[int], total: float) -> list[str]:
    lines = [f"# TYPE {name} histogram"]
    running = 0
    for bound, count in zip(bounds, counts, strict=False):
        running += count
        lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
    running += counts[-1]
    lines += [
        f'{name}_bucket{{le="+Inf"}} {running}',
        f"{name}_sum {total}",
        f"{name}_count {running}",
    ]
    return lines


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
    """``{"text": "…"}`` or ``{"texts": [...]}``."""

    text: str | None = Field(default=None, description="one text to judge")
    texts: list[str] | None = Field(default=None, description="several texts to judge")

    @model_validator(mode="after")
    def _one_of(self) -> ClassifyRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError('send exactly one of "text" or "texts"')
        return self


class Result(BaseModel):
    label: str
    score: float
    allowed: bool
    lang: str | None = Field(default=None, description="detected language (und: no letters)")
    lang_supported: bool | None = Field(
        default=None, description="whether the guard's spec lists the detected language"
    )


class ClassifyResponse(BaseModel):
    results: list[Result]
    model: str


def create_app(config: ServeConfig, *, guard: Any = None) -> Any:
    """The FastAPI app. ``guard`` (a loaded ``TopicGuard``) skips loading, for tests."""
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
        batcher = _Batcher(loaded, config, metrics)
        batcher.start()
        state.update(guard=loaded, batcher=batcher, ready=True)
        logger.info("serving %s (%s backend)", config.model_dir, loaded.backend_name)
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.stop()

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
        return {"status": "ready", "backend": state["guard"].backend_name}

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
        if config.api_key:
            supplied = request.headers.get("authorization", "")
            expected = f"Bearer {config.api_key}"
            if not hmac.compare_digest(supplied.encode(), expected.encode()):
                return error(401, "missing or wrong API key: send 'Authorization: Bearer KEY'")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
            return error(413, f"request body over {config.max_body_bytes} bytes")
        raw = await request.body()
        if len(raw) > config.max_body_bytes:
            return error(413, f"request body over {config.max_body_bytes} bytes")
        try:
            body = ClassifyRequest.model_validate_json(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            return error(422, problems)
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
        if not state["ready"]:
            return error(503, "the model is still loading")
        try:
            verdicts = await asyncio.wait_for(
                state["batcher"].classify(texts), config.request_timeout_s
            )
        except asyncio.TimeoutError:
            return error(
                503, f"no answer within {config.request_timeout_s} s: the guard is overloaded"
            )
        for verdict in verdicts:
            metrics.verdicts["true" if verdict.allowed else "false"] += 1
        return JSONResponse(
            {
                "results": [
                    {k: val for k, val in v.to_dict().items() if k != "text"} for v in verdicts
                ],
                "model": str(config.model_dir.name),
            }
        )

    return app


def run(config: ServeConfig, *, host: str, port: int, guard: Any = None) -> None:
    """Serve until interrupted; in-flight requests finish before the process exits."""
    try:
        import uvicorn
    except ImportError as exc:
        raise MissingDependencyError("uvicorn", "serve") from exc
    uvicorn.run(
        create_app(config, guard=guard),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=30,
    )

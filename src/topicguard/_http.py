"""The HTTP layer that ``serve`` and ``proxy`` share: bearer-token auth, the body-size limit,
Prometheus metrics (``prometheus-client``) and the uvicorn runner, one process or several.

Problems found here are raised as :class:`HttpProblem`; each service turns one into its own
JSON error shape (``serve``: ``{"error": "…"}``; ``proxy``: OpenAI's, :func:`openai_error`).
Starlette and uvicorn are imported lazily: importing this module costs nothing.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from topicguard._exceptions import DataError, MissingDependencyError

__all__ = [
    "MAX_BODY_BYTES",
    "HttpProblem",
    "Metrics",
    "check_key",
    "check_one_writer",
    "check_page_key",
    "openai_error",
    "read_body",
    "run_app",
    "run_workers",
    "validation_problems",
    "worker_threads",
]

# Where `serve` and `proxy` listen unless told: this machine only.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MAX_BODY_BYTES = 1_000_000  # one request body, in bytes: larger ones get 413
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's multiprocess folder

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class HttpProblem(Exception):
    """A request the service refuses: an HTTP status, a message for the caller, and a short
    machine-readable code (OpenAI's ``error.code``)."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def openai_error(problem: HttpProblem) -> dict[str, Any]:
    """OpenAI's error shape, ``{"error": {"message", "type", "code"}}``."""
    kind = "invalid_request_error" if problem.status < 500 else "upstream_error"
    if problem.status == 401:
        kind = "authentication_error"
    elif problem.status in (500, 503):
        kind = "server_error"
    return {"error": {"message": problem.message, "type": kind, "code": problem.code}}


def check_key(request: Any, api_key: str | None) -> None:
    """Refuse a request without ``Authorization: Bearer API_KEY`` (constant-time comparison);
    no key configured lets every request through."""
    if not api_key:
        return
    supplied = request.headers.get("authorization", "")
    if not hmac.compare_digest(supplied.encode(), f"Bearer {api_key}".encode()):
        raise HttpProblem(
            401, "missing or wrong API key: send 'Authorization: Bearer KEY'", "invalid_api_key"
        )


def check_page_key(request: Any, api_key: str | None) -> None:
    """:func:`check_key` for a browser, which cannot send a bearer token when it opens a page:
    HTTP Basic credentials whose password is the key (any user name) pass too."""
    if not api_key:
        return
    supplied = request.headers.get("authorization", "")
    scheme, _, value = supplied.partition(" ")
    if scheme.lower() == "basic":
        import base64
        import binascii

        try:
            password = base64.b64decode(value, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            password = ""
        if hmac.compare_digest(password.encode(), api_key.encode()):
            return
    check_key(request, api_key)


async def read_body(request: Any, max_bytes: int) -> bytes:
    """The request body, refused with 413 when over ``max_bytes`` (by its declared length
    before reading it, and by what actually arrived)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > max_bytes):
        raise HttpProblem(413, f"request body over {max_bytes} bytes", "request_too_large")
    raw: bytes = await request.body()
    if len(raw) > max_bytes:
        raise HttpProblem(413, f"request body over {max_bytes} bytes", "request_too_large")
    return raw


class Metrics:
    """The service's Prometheus metrics, kept by ``prometheus-client`` in a registry of their
    own (several apps in one process never share counts).

    Under ``topicguard serve --workers N`` (:func:`run_workers` sets
    ``PROMETHEUS_MULTIPROC_DIR``) every worker writes its counts to that folder and any
    worker's ``/metrics`` answers the sum over all of them, prometheus-client's multiprocess
    mode. ``batches``: keep the batch-size histogram (a service that batches texts);
    ``upstream``: keep the count of upstream outcomes (a service with an upstream)."""

    def __init__(self, *, batches: bool = True, upstream: bool = False) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram
        except ImportError as exc:
            raise MissingDependencyError("prometheus-client", "serve") from exc
        self.registry = CollectorRegistry()
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self._requests = Counter(
            "topicguard_requests",
            "requests answered, by HTTP status",
            ["status"],
            registry=self.registry,
        )
        self._verdicts = Counter(
            "topicguard_verdicts",
            "verdicts given, by whether the text was allowed",
            ["allowed"],
            registry=self.registry,
        )
        for allowed in ("true", "false"):
            self._verdicts.labels(allowed)
        self._latency = Histogram(
            "topicguard_request_seconds",
            "seconds from a request's arrival to its answer",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batches = None
        if batches:
            self._batches = Histogram(
                "topicguard_batch_size",
                "texts per batch the guard classified",
                buckets=_BATCH_BUCKETS,
                registry=self.registry,
            )
        self._upstream = None
        if upstream:
            self._upstream = Counter(
                "topicguard_upstream",
                "upstream answers by HTTP status, or how they failed",
                ["outcome"],
                registry=self.registry,
            )

    def observe_request(self, status: int, seconds: float) -> None:
        self._requests.labels(str(status)).inc()
        self._latency.observe(seconds)

    def observe_verdict(self, allowed: bool) -> None:
        self._verdicts.labels("true" if allowed else "false").inc()

    def observe_batch(self, size: int) -> None:
        if self._batches is not None:
            self._batches.observe(size)

    def observe_upstream(self, outcome: str) -> None:
        """An upstream answer's status code, or ``timeout``/``unreachable``/``broken``."""
        if self._upstream is not None:
            self._upstream.labels(outcome).inc()

    def render(self) -> str:
        """Prometheus' text format: this process's counts, or every worker's summed."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = self.registry
        if self.multiprocess:
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        return generate_latest(registry).decode("utf-8")


def validation_problems(exc: Any) -> str:
    """A pydantic ``ValidationError`` on a request body as one line: ``field: problem; ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )


def run_app(app: Any, *, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn until interrupted; in-flight requests finish first."""
    try:
        import uvicorn
    except ImportError as exc:
        raise MissingDependencyError("uvicorn", "serve") from exc
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)


def worker_threads(workers: int, threads: int | None) -> int | None:
    """Inference threads per worker process: as given, else the cores shared out so that
    workers × threads ≈ cores (None for one worker: the guard takes every core)."""
    if threads is not None or workers <= 1:
        return threads
    from topicguard.runtime import available_cores

    return max(available_cores() // workers, 1)


def check_one_writer(decision_log: Any, review_dir: Any) -> None:
    """Files that take one writer refuse several worker processes: each would keep its own
    rotation or review progress and overwrite the others'."""
    if decision_log is not None:
        raise DataError(
            "a decision log takes one writer: run with --workers 1, or one process per log file"
        )
    if review_dir is not None:
        raise DataError("reviewing takes one writer: use --review-dir with --workers 1")


def run_workers(factory: str, *, host: str, port: int, workers: int, env: dict[str, str]) -> None:
    """Serve the app that ``factory`` (``module:function``) builds in each of ``workers``
    processes sharing one listening socket (uvicorn's process manager). ``env`` reaches
    every worker (their configuration); the workers' metrics meet in a temporary folder
    removed on exit."""
    import tempfile

    try:
        import uvicorn
    except ImportError as exc:
        raise MissingDependencyError("uvicorn", "serve") from exc
    with tempfile.TemporaryDirectory(prefix="topicguard-metrics-") as metrics_dir:
        saved = {k: os.environ.get(k) for k in [*env, MULTIPROC_ENV]}
        os.environ.update(env)
        os.environ[MULTIPROC_ENV] = metrics_dir
        try:
            uvicorn.run(
                factory,
                factory=True,
                host=host,
                port=port,
                workers=workers,
                log_level="warning",
                timeout_graceful_shutdown=30,
            )
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

"""The HTTP layer that ``serve`` and ``proxy`` share: bearer-token auth, the body-size limit,
Prometheus-style metrics and the uvicorn runner.

Problems found here are raised as :class:`HttpProblem`; each service turns one into its own
JSON error shape (``serve``: ``{"error": "…"}``; ``proxy``: OpenAI's, :func:`openai_error`).
Starlette and uvicorn are imported lazily: importing this module costs nothing.
"""

from __future__ import annotations

import hmac
from collections import Counter
from typing import Any

from topicguard._exceptions import MissingDependencyError

__all__ = [
    "MAX_BODY_BYTES",
    "HttpProblem",
    "Metrics",
    "check_key",
    "check_page_key",
    "openai_error",
    "read_body",
    "run_app",
    "validation_problems",
]

# Where `serve` and `proxy` listen unless told: this machine only.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MAX_BODY_BYTES = 1_000_000  # one request body, in bytes: larger ones get 413

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
    """Counters and histograms in Prometheus' text format, without a dependency.

    ``batches``: render the batch-size histogram (a service that batches texts);
    ``upstream``: render the count of upstream outcomes (a service with an upstream)."""

    def __init__(self, *, batches: bool = True, upstream: bool = False) -> None:
        self.requests: Counter[str] = Counter()
        self.verdicts: Counter[str] = Counter()
        self.upstream: Counter[str] = Counter()
        self.latency = [0] * (len(_LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.batches = [0] * (len(_BATCH_BUCKETS) + 1)
        self.batch_sum = 0
        self._render_batches = batches
        self._render_upstream = upstream

    def observe_request(self, status: int, seconds: float) -> None:
        self.requests[str(status)] += 1
        self.latency[_bucket(_LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def observe_verdict(self, allowed: bool) -> None:
        self.verdicts["true" if allowed else "false"] += 1

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
        if self._render_upstream:
            lines.append("# TYPE topicguard_upstream_total counter")
            lines += [
                f'topicguard_upstream_total{{outcome="{o}"}} {n}'
                for o, n in sorted(self.upstream.items())
            ]
        lines += _histogram(
            "topicguard_request_seconds", _LATENCY_BUCKETS, self.latency, self.latency_sum
        )
        if self._render_batches:
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

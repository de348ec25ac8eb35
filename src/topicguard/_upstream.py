"""The LLM server behind the proxy: requests forwarded over httpx, answers relayed back as
they come, and its failures as :class:`HttpProblem` (502: unreachable or broken off;
504: no answer in time).

httpx's async transport is used rather than a client: a proxy wants none of a client's
cookie jar (it would be shared by every user), redirects or auth, and saves their cost on
every request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from topicguard._http import HttpProblem, Metrics, openai_error

__all__ = ["Upstream"]

logger = logging.getLogger(__name__)

# response headers that the proxy's own server writes itself
_RESPONSE_HOP = frozenset(
    {b"content-length", b"connection", b"keep-alive", b"transfer-encoding", b"trailer",
     b"upgrade", b"date", b"server", b"proxy-authenticate"}
)  # fmt: skip


class Upstream:
    """One OpenAI-compatible server at ``base`` (its URL ending in ``/v1``).

    Each step of a request (connect, send, wait for the answer, each chunk of a stream) is
    bounded by ``timeout_s``, and so is a whole answer that is not a stream."""

    def __init__(
        self,
        base: str,
        *,
        timeout_s: float,
        probe_timeout_s: float,
        metrics: Metrics,
        transport: Any = None,
    ) -> None:
        import httpx

        self.base = base
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.transport = transport or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64)
        )
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._timeouts = {"timeout": timeout.as_dict()}
        self._probe_timeouts = {"timeout": httpx.Timeout(probe_timeout_s).as_dict()}

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def probe(self, headers: list[tuple[str, str]]) -> str | None:
        """None when the server answers HTTP at all (any status), else why not."""
        import httpx

        try:
            answer = await self._send("GET", "/models", headers, None, self._probe_timeouts)
            await answer.aclose()
        except httpx.HTTPError as exc:
            return _describe(exc)
        return None

    async def forward(
        self, method: str, path: str, headers: list[tuple[str, str]], content: bytes | None
    ) -> Any:
        """The server's answer to one request as a response of ours: its status, headers
        and body, or its event stream relayed chunk by chunk."""
        import httpx

        deadline = time.monotonic() + self.timeout_s
        try:
            answer = await self._send(method, path, headers, content, self._timeouts)
        except httpx.HTTPError as exc:
            raise self._failure(exc) from exc
        if answer.headers.get("content-type", "").startswith("text/event-stream"):
            return self._relayed(answer)
        try:
            body = await asyncio.wait_for(_read_raw(answer), max(deadline - time.monotonic(), 0))
        except (asyncio.TimeoutError, httpx.HTTPError) as exc:
            raise self._failure(exc) from exc
        finally:
            await answer.aclose()
        return self._relayed(answer, body)

    async def _send(
        self, method: str, path: str, headers: Any, content: Any, extensions: Any
    ) -> Any:
        import httpx

        request = httpx.Request(
            method, f"{self.base}{path}", headers=headers, content=content, extensions=extensions
        )
        return await self.transport.handle_async_request(request)

    def _failure(self, exc: BaseException) -> HttpProblem:
        import httpx

        if isinstance(exc, (asyncio.TimeoutError, httpx.TimeoutException)):
            self.metrics.observe_upstream("timeout")
            message = f"the upstream {self.base} did not answer within {self.timeout_s:g} s"
            return HttpProblem(504, message, "upstream_timeout")
        if isinstance(exc, httpx.ConnectError):
            self.metrics.observe_upstream("unreachable")
            message = f"cannot reach the upstream {self.base}: {_describe(exc)}"
            return HttpProblem(502, message, "upstream_unreachable")
        self.metrics.observe_upstream("broken")
        message = f"the upstream {self.base} broke off its answer: {_describe(exc)}"
        return HttpProblem(502, message, "bad_gateway")

    def _relayed(self, answer: Any, body: bytes | None = None) -> Any:
        from starlette.background import BackgroundTask
        from starlette.responses import Response, StreamingResponse

        self.metrics.observe_upstream(str(answer.status_code))
        response: Any
        if body is not None:
            response = Response(body, status_code=answer.status_code)
        else:
            response = StreamingResponse(
                self._relay(answer),
                status_code=answer.status_code,
                background=BackgroundTask(answer.aclose),  # also when the stream never began
            )
        # as they came, content-encoding included: the body is relayed undecoded
        response.raw_headers += [
            (k, v) for k, v in answer.headers.raw if k.lower() not in _RESPONSE_HOP
        ]
        return response

    async def _relay(self, answer: Any) -> AsyncIterator[bytes]:
        """The events as they arrive; on a break, an error event (which the OpenAI client
        raises). Closes the upstream stream however ours ends, a client gone included."""
        import anyio
        import httpx

        try:
            async for chunk in answer.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            problem = self._failure(exc)
            logger.warning("an upstream stream ended early: %s", problem.message)
            yield f"data: {json.dumps(openai_error(problem))}\n\n".encode()
        finally:
            with anyio.CancelScope(shield=True):  # a cancelled task still closes it
                await answer.aclose()


async def _read_raw(response: Any) -> bytes:
    return b"".join([chunk async for chunk in response.aiter_raw()])


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__

"""A fake OpenAI-compatible chat server on loopback (real HTTP, stdlib only) for tests.

``FakeLLM(reply)`` serves POST /v1/chat/completions; ``reply(request, call_number)`` returns
a ``Reply``: the answer text, or an HTTP status with headers, and an optional delay.
A request with ``"stream": true`` gets the answer as server-sent ``chat.completion.chunk``
events (``Reply.chunks``, ``chunk_delay``; ``gate``: waited for after the first content chunk), and
how each stream ended is kept in ``streams``. GET /v1/models lists one model. Every request
is recorded in ``requests``, its headers in ``headers``. ``refusing(reply, modes, status)``
wraps a reply function so that it refuses some structured-output modes the way real servers
do.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    content: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    finish_reason: str = "stop"
    reasoning_content: str | None = None
    message: str = ""
    body: dict[str, Any] | None = None  # sent as is, whatever the status
    chunks: list[str] | None = None  # streamed contents (default: the content's words)
    chunk_delay: float = 0.0
    gate: threading.Event | None = None  # when streaming: waited for after the first chunk


class FakeLLM:
    def __init__(self, reply: Callable[[dict[str, Any], int], Reply]) -> None:
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        # per stream: ("done" or "closed", chunks sent, whether the gate opened in time)
        self.streams: list[tuple[str, int, bool | None]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                data = json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data.encode())

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fake.requests.append(body)
                    fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                    number = len(fake.requests)
                answer = fake.reply(body, number)
                if answer.delay:
                    time.sleep(answer.delay)
                if body.get("stream") and answer.status == 200 and answer.body is None:
                    self.stream(body, number, answer)
                    return
                if answer.body is not None:
                    payload = answer.body
                elif answer.status != 200:
                    payload = {
                        "error": {
                            "message": answer.message or f"fake error {answer.status}",
                            "type": "fake",
                            "code": answer.status,
                        }
                    }
                else:
                    message: dict[str, Any] = {"role": "assistant", "content": answer.content}
                    if answer.reasoning_content is not None:
                        message["reasoning_content"] = answer.reasoning_content
                    payload = {
                        "id": f"fake-{number}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", "fake"),
                        "choices": [
                            {"index": 0, "message": message, "finish_reason": answer.finish_reason}
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    }
                data = json.dumps(payload).encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in answer.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def stream(self, body: dict[str, Any], number: int, answer: Reply) -> None:
                pieces = answer.chunks if answer.chunks is not None else answer.content.split()
                deltas = [{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces]
                events = [(d, None) for d in deltas] + [({}, answer.finish_reason)]
                sent, opened = 0, None
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for delta, finish in events:
                        chunk = {
                            "id": f"fake-{number}",
                            "object": "chat.completion.chunk",
                            "created": 0,
                            "model": body.get("model", "fake"),
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                        }
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        sent += 1
                        if sent == 2 and answer.gate is not None:
                            opened = answer.gate.wait(5)
                        time.sleep(answer.chunk_delay)
                    self.wfile.write(b"data: [DONE]\n\n")
                    fake.streams.append(("done", sent, opened))
                except (BrokenPipeError, ConnectionResetError):
                    fake.streams.append(("closed", sent, opened))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def response_format(request: dict[str, Any]) -> str | None:
    """The structured-output mode a request asked for, named as the client names it
    (``json_object_schema``: JSON mode with a schema beside it; ``None``: free text)."""
    value = request.get("response_format")
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    return "json_object_schema" if kind == "json_object" and "schema" in value else kind


def refusal(mode: str, status: int) -> Reply:
    """A real server's refusal of ``mode``, by status:

    - 422: FastAPI's validation error, with the reason only in ``detail`` (vLLM's and other
      FastAPI servers' answer to a body they cannot validate);
    - 500: llama-cpp-python's server, which wraps that validation error in an internal one;
    - 400: OpenAI's shape (a server that takes no schema beside json_object names only it);
    - 200: an error in the body of a successful answer.
    """
    if mode == "json_object_schema":
        problem: dict[str, Any] = {
            "type": "extra_forbidden",
            "msg": "Extra inputs are not permitted",
        }
        problem["loc"] = ["body", "response_format", "schema"]
    else:
        accepted = "'text' or 'json_object'" if mode == "json_schema" else "'text'"
        problem = {"type": "literal_error", "loc": ["body", "response_format", "type"]}
        problem.update({"msg": f"Input should be {accepted}", "input": mode})
    if status == 422:
        return Reply(status=422, body={"detail": [problem]})
    if status == 500:
        # pydantic's error list, printed by Python: the location is a tuple
        message = str([{**problem, "loc": tuple(problem["loc"])}])
        error = {"message": message, "type": "internal_server_error", "param": None}
        return Reply(status=500, body={"error": {**error, "code": None}})
    if status == 400:
        if mode == "json_object_schema":
            return Reply(status=400, message="Unrecognized request argument supplied: schema")
        text = f"Invalid parameter: 'response_format' of type '{mode}' is not supported"
        return Reply(status=400, message=text)
    return Reply(body={"error": {"message": f"response_format {mode} is not supported"}})


def refusing(
    reply: Callable[[dict[str, Any], int], Reply], modes: tuple[str, ...], status: int
) -> Callable[[dict[str, Any], int], Reply]:
    """``reply``, except that requests for one of ``modes`` are refused with ``status``."""

    def answer(request: dict[str, Any], number: int) -> Reply:
        mode = response_format(request)
        if mode in modes:
            return refusal(mode, status)
        return reply(request, number)

    return answer


def user_text(request: dict[str, Any]) -> str:
    return str(request["messages"][-1]["content"])


def fake_settings(url: str, tmp_path: Any, **kwargs: Any) -> Any:
    """LLM settings for tests: a cache under ``tmp_path``, fast backoff, few retries."""
    from topicguard.llm import LLMSettings

    values: dict[str, Any] = {
        "base_url": url,
        "model": "fake",
        "cache_dir": tmp_path / "cache",
        "backoff_seconds": 0.01,
        "max_retries": 2,
        "concurrency": 4,
        "timeout": 5.0,
    }
    values.update(kwargs)
    return LLMSettings(**values)

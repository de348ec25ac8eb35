"""What the guard proxy adds to a chat request: the same requests sent straight to a local
fake LLM and through ``topicguard proxy`` in front of it, one at a time, allowed and blocked,
streaming and not.

The fake LLM answers after a fixed delay (``--delay-ms``; a stream sends a few chunks); the
proxy and the fake each run in a process of their own on loopback, and each text goes to
both routes in turns, so that both see the same (possibly busy) machine. Reported per case:
p50/p99 of each route, to the last byte, and their difference (``added_*``; negative for a
blocked request, which the proxy answers without the LLM); the guard's time inside the
proxy (its ``server-timing`` header) and the proxy's ``overhead`` besides it. Beside them,
the guard's own ``classify`` p50 on the allowed texts, timed in this process before the
servers start, back to back and paced (one call per ``--delay-ms``, as requests come through
the proxy: ``guard_paced_p50_ms``). Targets: an allowed request's added p50 within 1 ms of
the guard's p50; a blocked request answered in under 10 ms p50.

    python benchmarks/proxy.py [--model runs/demo] [--requests 200] [--delay-ms 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

CASES = [("allowed", False), ("allowed", True), ("blocked", False), ("blocked", True)]
STREAM_CHUNKS = 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fake_llm(delay_s: float) -> Any:
    """A bare ASGI OpenAI-compatible chat server: each answer after ``delay_s``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"].endswith("/models"):
            await _send(send, 200, "application/json", [b'{"object":"list","data":[]}'])
            return
        request = json.loads(body)
        await asyncio.sleep(delay_s)
        head = {"id": "fake", "created": 0, "model": request.get("model", "fake")}
        if not request.get("stream"):
            message = {"role": "assistant", "content": "It is out for delivery today."}
            answer = head | {
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
            await _send(send, 200, "application/json", [json.dumps(answer).encode()])
            return
        events = []
        for i in range(STREAM_CHUNKS):
            choice = {"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}
            chunk = head | {"object": "chat.completion.chunk", "choices": [choice]}
            events.append(f"data: {json.dumps(chunk)}\n\n".encode())
        await _send(send, 200, "text/event-stream", [*events, b"data: [DONE]\n\n"])

    return app


async def _send(send: Any, status: int, content_type: str, parts: list[bytes]) -> None:
    headers = [(b"content-type", content_type.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    for part in parts:
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _start(command: list[str], log: Any) -> subprocess.Popen[str]:
    # the log is a file, not a pipe: a chatty process must never block on a full pipe
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)


def _wait(url: str, process: subprocess.Popen[str], log: Any, what: str) -> None:
    import httpx

    for _ in range(600):
        if process.poll() is not None:
            log.seek(0)
            reason = log.read().strip().splitlines()[-1:] or [""]
            raise SystemExit(f"error: the {what} exited: {reason[0]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"error: the {what} did not become ready within 60 s")


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    import numpy as np

    ms = np.array(seconds) * 1000
    return round(float(np.percentile(ms, 50)), 3), round(float(np.percentile(ms, 99)), 3)


def _time_request(client: Any, url: str, body: dict[str, Any]) -> tuple[float, Any]:
    """Seconds to the last byte, and the answer's headers."""
    started = time.perf_counter()
    with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        for _ in response.iter_raw():
            pass
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code}")
    return elapsed, response.headers


def _guard_seconds(headers: Any) -> float:
    """The guard's time inside the proxy, from ``server-timing: guard;dur=MS``."""
    for metric in headers.get("server-timing", "").split(","):
        name, _, duration = metric.strip().partition(";dur=")
        if name == "guard":
            return float(duration) / 1000
    raise RuntimeError("the proxy sent no server-timing for the guard")


def time_guard(guard: Any, texts: list[str], requests: int, pause_s: float = 0.0) -> list[float]:
    """The guard's own ``classify`` of one text at a time, in this process, back to back or
    with ``pause_s`` between calls (the pace of requests through the proxy: an idle moment
    costs the next call its warm caches)."""
    seconds = []
    for i in range(requests + 5):  # the first 5 warm up
        time.sleep(pause_s)
        started = time.perf_counter()
        guard.classify([texts[i % len(texts)]])
        if i >= 5:
            seconds.append(time.perf_counter() - started)
    return seconds


def measure(
    upstream: str, proxy: str, texts: dict[str, list[str]], requests: int
) -> dict[str, Any]:
    """Each case's latencies straight to ``upstream`` and through ``proxy``, in turns so that
    both routes see the same machine, and the guard's share of each proxied request."""
    import httpx

    result: dict[str, Any] = {"allowed": {}, "blocked": {}}
    mismatches = 0
    with httpx.Client(timeout=30) as client:
        for kind, stream in CASES:
            if not texts[kind]:
                result[kind]["stream" if stream else "json"] = None
                continue
            routes: dict[str, list[float]] = {"direct": [], "proxy": [], "rest": [], "guard": []}
            for i in range(requests + 5):  # the first 5 warm up connections and caches
                text = texts[kind][i % len(texts[kind])]
                body = {"model": "fake", "messages": [{"role": "user", "content": text}]}
                body["stream"] = stream
                order = [("direct", upstream), ("proxy", proxy)]
                for route, url in order if i % 2 else order[::-1]:
                    seconds, headers = _time_request(client, url, body)
                    if i < 5:
                        continue
                    routes[route].append(seconds)
                    if route == "proxy":
                        mismatches += headers.get("x-topicguard-verdict") != kind
                        routes["guard"].append(_guard_seconds(headers))
                        routes["rest"].append(seconds - routes["guard"][-1])
            direct_p50, direct_p99 = _percentiles(routes["direct"])
            proxy_p50, proxy_p99 = _percentiles(routes["proxy"])
            rest_p50, _ = _percentiles(routes["rest"])
            result[kind]["stream" if stream else "json"] = {
                "n": requests,
                "direct_p50_ms": direct_p50,
                "direct_p99_ms": direct_p99,
                "proxy_p50_ms": proxy_p50,
                "proxy_p99_ms": proxy_p99,
                "added_p50_ms": round(proxy_p50 - direct_p50, 3),
                "added_p99_ms": round(proxy_p99 - direct_p99, 3),
                "guard_in_proxy_p50_ms": _percentiles(routes["guard"])[0],
                # what the proxy adds besides the guard: the upstream's own time is taken off
                # an allowed request's; a blocked one's is all the proxy's
                "overhead_p50_ms": round(rest_p50 - (direct_p50 if kind == "allowed" else 0), 3),
            }
    result["verdict_mismatches"] = mismatches
    return result


def main(argv: list[str] | None = None) -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--model", type=Path, default=Path("runs/demo"))
    parser.add_argument("--requests", type=int, default=200, help="per case and route")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="the fake LLM's delay")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--fake-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fake_upstream is not None:  # the fake LLM's own process
        import uvicorn

        app = fake_llm(args.delay_ms / 1000)
        uvicorn.run(app, port=args.fake_upstream, log_level="warning", lifespan="off")
        return 0
    if not 1 <= args.requests <= 100_000 or not 0 <= args.delay_ms <= 10_000:
        parser.error("--requests must be 1-100000 and --delay-ms 0-10000")

    from topicguard import TopicGuard, TopicGuardError
    from topicguard.bench import benchmark_texts

    try:
        guard = TopicGuard.load(args.model, backend=args.backend)
    except TopicGuardError as exc:
        return _common.failed(exc)
    pool = benchmark_texts()
    # one text at a time, as the proxy judges them: an int8 graph quantises each batch with
    # its own range, so a score a hair from a threshold can differ between batch and single
    verdicts = [guard.classify(text)[0] for text in pool]
    texts = {
        "allowed": [v.text for v in verdicts if v.allowed][: args.requests],
        "blocked": [v.text for v in verdicts if not v.allowed][: args.requests],
    }
    # timed before the servers start, which would otherwise share the cores
    allowed = texts["allowed"] or pool
    guard_p50, guard_p99 = _percentiles(time_guard(guard, allowed, args.requests))
    paced = time_guard(guard, allowed, args.requests, pause_s=args.delay_ms / 1000)
    guard_paced_p50 = _percentiles(paced)[0]
    upstream_port, proxy_port = _free_port(), _free_port()
    upstream, proxy = f"http://127.0.0.1:{upstream_port}", f"http://127.0.0.1:{proxy_port}"
    python = sys.executable
    with (
        tempfile.TemporaryFile(mode="w+") as upstream_log,
        tempfile.TemporaryFile(mode="w+") as proxy_log,
    ):
        fake = [python, __file__, "--fake-upstream", str(upstream_port)]
        fake += ["--delay-ms", str(args.delay_ms)]
        cli = [python, "-c", "from topicguard.cli import main; main()", "-q", "proxy"]
        cli += [str(args.model), "--upstream", f"{upstream}/v1", "--port", str(proxy_port)]
        cli += ["--backend", args.backend]
        processes = [_start(fake, upstream_log), _start(cli, proxy_log)]
        try:
            _wait(f"{upstream}/v1/models", processes[0], upstream_log, "fake LLM")
            _wait(f"{proxy}/readyz", processes[1], proxy_log, "proxy")
            result = measure(upstream, proxy, texts, args.requests)
        finally:
            for process in processes:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
    result = {
        "model": str(args.model),
        "backend": guard.backend_name,
        "upstream_delay_ms": args.delay_ms,
        "requests": args.requests,
        "guard_p50_ms": guard_p50,
        "guard_p99_ms": guard_p99,
        "guard_paced_p50_ms": guard_paced_p50,
        **result,
    }
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 0 if result["verdict_mismatches"] == 0 else 1


def _print(result: dict[str, Any]) -> None:
    print(
        f"{result['model']} ({result['backend']}), fake LLM delay {result['upstream_delay_ms']} "
        f"ms, {result['requests']} requests a case; the guard's own p50 "
        f"{result['guard_p50_ms']:.2f} ms; milliseconds:"
    )
    columns = ("direct p50", "proxy p50", "added p50", "added p99", "guard p50", "overhead")
    print(f"{'case':<16}" + "".join(f"{c:>11}" for c in columns))
    keys = ("direct_p50_ms", "proxy_p50_ms", "added_p50_ms", "added_p99_ms")
    keys += ("guard_in_proxy_p50_ms", "overhead_p50_ms")
    for kind, stream in CASES:
        row = result[kind]["stream" if stream else "json"]
        name = f"{kind} {'stream' if stream else 'json'}"
        if row is None:
            print(f"{name:<16} (the guard judged none of the texts {kind})")
            continue
        print(f"{name:<16}" + "".join(f"{row[k]:>11.2f}" for k in keys))


if __name__ == "__main__":
    sys.exit(main())

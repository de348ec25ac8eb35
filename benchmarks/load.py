"""Load test of `topicguard serve` on loopback: N concurrent clients, T seconds, bounded.

Starts the server as a subprocess on 127.0.0.1, waits until /readyz answers, then each
client sends one real query at a time to /v1/classify until the time is up. Prints JSON:
requests per second, latency p50/p99 and error counts. The server is stopped at the end.

    python benchmarks/load.py MODEL [--clients 64] [--seconds 30] [--backend auto]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _drive(url: str, texts: list[str], clients: int, seconds: float) -> dict[str, object]:
    import httpx
    import numpy as np

    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds

    async def client(number: int, http: httpx.AsyncClient) -> None:
        i = number
        while time.perf_counter() < deadline:
            text = texts[i % len(texts)]
            i += clients
            start = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/classify", json={"text": text})
                if response.status_code != 200:
                    errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
                    continue
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(n, http) for n in range(clients)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "errors_by_kind": errors,
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 1024 or not 0 < args.seconds <= 600:
        parser.error("--clients must be 1-1024 and --seconds 0-600")

    from topicguard.bench import benchmark_texts

    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from topicguard.cli import main; main()",
            "-q",
            "serve",
            str(args.model),
            "--port",
            str(port),
            "--backend",
            args.backend,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(600):
            if server.poll() is not None:
                reason = server.stderr.read().strip() if server.stderr else ""
                print(f"error: the server exited: {reason}", file=sys.stderr)
                return 1
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            print("error: the server did not become ready within 60 s", file=sys.stderr)
            return 1
        result = asyncio.run(_drive(url, benchmark_texts(), args.clients, args.seconds))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    print(json.dumps(result))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

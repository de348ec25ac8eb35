"""Load test of `topicguard serve` on loopback: N concurrent clients, T seconds, bounded.

Starts the server as a subprocess on 127.0.0.1, waits until /readyz answers, then each
client sends one real query at a time to /v1/classify until the time is up. Prints JSON:
requests per second, latency p50/p99 and error counts. The server is stopped at the end.

    python benchmarks/load.py MODEL [--clients 64] [--seconds 30] [--backend auto]
    python benchmarks/load.py MODEL --compare     # --workers 1, --workers 2 and --ray, one run

With ``--compare`` the JSON holds each server's result under ``runs``, the speed-up of two
workers over one, and requests per second per core (the load client shares the cores).
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _drive(
    host: str, port: int, texts: list[str], clients: int, seconds: float
) -> dict[str, object]:
    """Each client keeps one HTTP/1.1 connection and sends one request at a time. The client
    is a few lines over asyncio streams: a heavier HTTP library would eat the CPU that the
    server needs on a 2-core machine and measure itself instead."""
    import numpy as np

    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds

    def count(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def client(number: int) -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            count(type(exc).__name__)
            return
        i = number
        try:
            while time.perf_counter() < deadline:
                body = json.dumps({"text": texts[i % len(texts)]}).encode()
                i += clients
                request = (
                    f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body
                start = time.perf_counter()
                writer.write(request)
                await writer.drain()
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                status = status_line.split()[1].decode() if status_line else "closed"
                if status != "200":
                    count(status)
                    if status == "closed":
                        return
                    continue
                latencies.append(time.perf_counter() - start)
        except (OSError, asyncio.IncompleteReadError) as exc:
            count(type(exc).__name__)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
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
    parser.add_argument("--threads", type=int, help="inference threads of the server")
    parser.add_argument("--workers", type=int, default=1, help="serve --workers N")
    parser.add_argument("--ray", action="store_true", help="serve --ray (Ray Serve)")
    parser.add_argument("--replicas", type=int, default=1, help="with --ray")
    parser.add_argument(
        "--compare", action="store_true", help="--workers 1, --workers 2 and --ray in one run"
    )
    parser.add_argument("--json", action="store_true", help="JSON output (the only format)")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 1024 or not 0 < args.seconds <= 600:
        parser.error("--clients must be 1-1024 and --seconds 0-600")
    if not args.compare:
        result = _run(args, _server_options(args))
        if result is None:
            return 1
        print(json.dumps(result))
        return 0 if result["errors"] == 0 else 1
    import importlib.util

    from topicguard.runtime import available_cores

    setups = {"workers_1": ["--workers", "1"], "workers_2": ["--workers", "2"]}
    if importlib.util.find_spec("ray") is not None:
        setups["ray"] = ["--ray", "--replicas", str(max(args.replicas, 2))]
    runs = {}
    for name, options in setups.items():
        result = _run(args, options + _server_options(args, scale=False))
        if result is None:
            return 1
        runs[name] = result
    cores = available_cores()
    summary = {
        "cores": cores,
        "runs": runs,
        "workers_2_vs_1": round(
            runs["workers_2"]["requests_per_second"] / runs["workers_1"]["requests_per_second"], 2
        ),
        "requests_per_second_per_core": {
            name: round(r["requests_per_second"] / cores, 1) for name, r in runs.items()
        },
    }
    print(json.dumps(summary))
    return 0 if all(r["errors"] == 0 for r in runs.values()) else 1


def _server_options(args: argparse.Namespace, *, scale: bool = True) -> list[str]:
    options = ["--backend", args.backend]
    options += ["--threads", str(args.threads)] if args.threads else []
    if scale and args.ray:
        options += ["--ray", "--replicas", str(args.replicas)]
    elif scale and args.workers > 1:
        options += ["--workers", str(args.workers)]
    return options


def _run(args: argparse.Namespace, options: list[str]) -> dict[str, object] | None:
    """Start ``serve`` with ``options``, drive it, stop it: the result, None on failure."""
    from topicguard.bench import benchmark_texts

    port = _free_port()
    log = tempfile.TemporaryFile(mode="w+")
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
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,  # a file, not a pipe: a chatty server must never block on a full pipe
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(600):
            if server.poll() is not None:
                log.seek(0)
                reason = log.read().strip().splitlines()[-1:] or [""]
                print(f"error: the server exited: {reason[0]}", file=sys.stderr)
                return None
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            print("error: the server did not become ready within 60 s", file=sys.stderr)
            return None
        result = asyncio.run(
            _drive("127.0.0.1", port, benchmark_texts(), args.clients, args.seconds)
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return dict(result, server=" ".join(options))


if __name__ == "__main__":
    sys.exit(main())

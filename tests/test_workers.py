"""``serve --workers N``: N processes share the port, each answers, and ``/metrics`` sums
them (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from topicguard.cli import app
from topicguard.serve import ServeConfig, _config_from_json, _config_to_json

runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_workers_both_answer_and_metrics_add_up(tiny_guard: Path) -> None:
    port = _free_port()
    code = "import sys; from topicguard.cli import main; sys.argv[0] = 'topicguard'; main()"
    args = ["serve", str(tiny_guard), "--port", str(port), "--workers", "2"]
    server = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    url = f"http://127.0.0.1:{port}"

    def ready_pid(_: int) -> int | None:
        try:  # a new connection each time: the kernel hands it to either worker
            response = httpx.get(f"{url}/readyz", timeout=5)
        except httpx.HTTPError:
            return None
        return int(response.json()["pid"]) if response.status_code == 200 else None

    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 180
        with ThreadPoolExecutor(8) as pool:
            while len(pids) < 2:
                assert server.poll() is None, server.communicate()[0]
                assert time.monotonic() < deadline, f"workers answering: {pids}"
                pids |= {p for p in pool.map(ready_pid, range(16)) if p is not None}
                time.sleep(0.1)
        assert server.pid not in pids  # the workers answer, not the process that started them
        texts = ["where is my parcel", "write me a poem"]
        with httpx.Client(base_url=url, timeout=30) as client:
            for _ in range(5):
                response = client.post("/v1/classify", json={"texts": texts})
                assert response.status_code == 200, response.text
                assert len(response.json()["results"]) == 2
            assert client.post("/v1/classify", json={"texts": []}).status_code == 422
            metrics = client.get("/metrics").text
        values = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line[:1] != "#")
        assert float(values['topicguard_requests_total{status="200"}']) == 5
        assert float(values['topicguard_requests_total{status="422"}']) == 1
        verdicts = sum(
            float(values[f'topicguard_verdicts_total{{allowed="{a}"}}']) for a in ("true", "false")
        )
        assert verdicts == 10
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=60)[0]
    assert server.returncode == 0, output


def test_workers_with_a_decision_log_is_one_clear_line(tiny_guard: Path, tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    args = ["serve", str(tiny_guard), "--workers", "2", "--log", str(log)]
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert "--workers 1" in result.output
    assert not log.exists()


@pytest.mark.parametrize("command", ["serve", "proxy"])
def test_workers_with_a_review_folder_is_one_clear_line(
    command: str, tiny_guard: Path, tmp_path: Path
) -> None:
    """Each worker would keep its own review progress and overwrite the others' labels."""
    args = [command, str(tiny_guard), "--workers", "2", "--review-dir", str(tmp_path)]
    if command == "proxy":
        args += ["--upstream", "http://127.0.0.1:9/v1"]
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert "--review-dir takes one writer" in result.output


def test_the_worker_configuration_travels_without_the_key(tiny_guard: Path) -> None:
    config = ServeConfig(model_dir=tiny_guard, threads=1, api_key="s3cret", max_texts=7)
    text = _config_to_json(config)
    assert "s3cret" not in text
    assert _config_from_json(text, "s3cret") == config

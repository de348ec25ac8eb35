"""The decision log: queued, never failing a request, rotated by size; serve writes it."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from topicguard import DataError, TopicGuard, Verdict
from topicguard import decisions as decisions_module
from topicguard.decisions import DecisionLog, log_files, read_decisions
from topicguard.serve import ServeConfig, create_app


def _verdict(i: int, *, allowed: bool = True, context: bool = False) -> Verdict:
    return Verdict(
        text=f"where is parcel {i} 包裹",
        label="True" if allowed else "False",
        score=0.9 if allowed else 0.1,
        allowed=allowed,
        lang="en",
        lang_supported=True,
        threshold=0.5,
        context=context,
    )


def test_lines_stay_whole_under_concurrent_writers_and_rotate(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "decisions.jsonl"
    log = DecisionLog(path, texts=True, max_mb=0.01, backups=100, model="abc123")
    threads, per_thread = 8, 150

    def write(worker: int) -> None:
        for i in range(per_thread):
            log.record(_verdict(worker * 1000 + i, allowed=i % 3 > 0), latency_ms=1.23456)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, range(threads)))
    log.close()
    files = log_files(path)
    assert len(files) > 2 and files[-1] == path  # rotated, oldest first, the live file last
    for file in files:
        assert file.stat().st_size <= 0.01 * 1024 * 1024 + 200
        for line in file.read_text(encoding="utf-8").splitlines():
            json.loads(line)  # every line whole
    decisions = read_decisions([path])
    assert len(decisions) == threads * per_thread and log.dropped == 0
    assert len({d.text for d in decisions}) == threads * per_thread
    first = json.loads(files[0].read_text(encoding="utf-8").splitlines()[0])
    assert list(first) == [
        "time",
        "verdict",
        "score",
        "threshold",
        "lang",
        "model",
        "latency_ms",
        "text",
    ]
    assert first["time"].endswith("+00:00") and first["model"] == "abc123"
    assert first["latency_ms"] == 1.235 and "包裹" in first["text"]


def test_texts_only_when_asked_and_context_marked(tmp_path: Path) -> None:
    with DecisionLog(tmp_path / "d.jsonl") as log:
        log.record(_verdict(1, context=True), latency_ms=2)
        log.record(_verdict(2), latency_ms=2)
    rows = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert all("text" not in row for row in rows)
    assert rows[0]["context"] is True and "context" not in rows[1]
    log.record(_verdict(3), latency_ms=2)  # after close: ignored, no error
    with pytest.raises(DataError, match="positive number of megabytes"):
        DecisionLog(tmp_path / "e.jsonl", max_mb=0)


def test_a_full_queue_or_a_failing_disk_drops_records_without_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    handled = threading.Event()
    original = decisions_module._FileHandler.emit

    def stalled(self: Any, record: logging.LogRecord) -> None:
        handled.set()
        release.wait(10)
        original(self, record)

    monkeypatch.setattr(decisions_module, "QUEUE_SIZE", 2)
    monkeypatch.setattr(decisions_module._FileHandler, "emit", stalled)
    log = DecisionLog(tmp_path / "d.jsonl")
    log.record(_verdict(0), latency_ms=1)
    assert handled.wait(10)  # the writer holds the first record; two more fill the queue
    for i in range(1, 6):
        log.record(_verdict(i), latency_ms=1)  # returns at once although the writer is stuck
    assert log.dropped == 3
    release.set()
    log.close()
    assert len(read_decisions([tmp_path / "d.jsonl"])) == 3

    monkeypatch.setattr(decisions_module._FileHandler, "emit", original)

    def broken(self: Any, record: logging.LogRecord) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(decisions_module._JsonFormatter, "format", broken)
    with caplog.at_level(logging.WARNING, logger="topicguard.decisions"):
        with DecisionLog(tmp_path / "full.jsonl") as full:
            full.record(_verdict(1), latency_ms=1)
            full.record(_verdict(2), latency_ms=1)
    assert full.dropped == 2
    assert sum("cannot write the decision log" in r.message for r in caplog.records) == 1


def test_read_decisions_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DataError, match="decision log not found"):
        read_decisions([tmp_path / "none.jsonl"])
    path = tmp_path / "d.jsonl"
    path.write_text('{"verdict": "allowed", "score": 0.9}\n{"verdict": "allo', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert len(read_decisions([path])) == 1  # the torn last line is skipped
    assert "skipped 1 lines" in caplog.text
    path.write_text('{"text": "a", "label": true}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.jsonl:1: not a decision log line"):
        read_decisions([path])


@contextlib.contextmanager
def uvicorn_server(app: Any) -> Iterator[str]:
    """``app`` on a real uvicorn server on a free loopback port, in a thread."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started:
                break
            threading.Event().wait(0.05)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_serve_logs_every_decision_of_concurrent_requests(tiny_guard: Path, tmp_path: Path) -> None:
    guard = TopicGuard.load(tiny_guard)
    log = tmp_path / "decisions.jsonl"
    config = ServeConfig(model_dir=tiny_guard, decision_log=log, log_texts=True, log_max_mb=0.005)
    conversation = [
        {"role": "user", "content": "where is my parcel SB1234567890"},
        {"role": "assistant", "content": "It is at the depot."},
        {"role": "user", "content": "and tomorrow?"},
    ]
    bodies: list[dict[str, Any]] = []
    for i in range(30):
        bodies.append({"text": f"where is my parcel number {i}"})
        bodies.append({"texts": [f"write a poem about {i}", f"refund for order {i}"]})
        bodies.append({"messages": conversation})
    with uvicorn_server(create_app(config, guard=guard)) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            with ThreadPoolExecutor(8) as pool:
                responses = list(pool.map(lambda b: client.post("/v1/classify", json=b), bodies))
            assert all(r.status_code == 200 for r in responses), responses[0].text
            answer = client.post("/v1/classify", json={"messages": conversation}).json()
    expected = guard.classify_conversation(conversation)
    assert answer["results"][0]["score"] == expected.score
    assert len(log_files(log)) > 1  # rotated
    decisions = read_decisions([log])  # the server closed the log: everything is written
    assert len(decisions) == 30 * 4 + 1
    assert {d.model for d in decisions} == {guard.fingerprint}
    assert sum(d.text == "and tomorrow?" for d in decisions) == 31
    assert all(d.latency_ms is not None and d.latency_ms >= 0 for d in decisions)
    assert {d.lang for d in decisions} <= {"en", "de", "es", "fr", "zh"}

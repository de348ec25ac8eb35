"""topicguard feedback: what in a decision log is worth a look; and the whole loop, end to end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_llm import FakeLLM, Reply, user_text
from typer.testing import CliRunner

from topicguard import DataError
from topicguard.cli import app
from topicguard.data import read_dataset, read_rows
from topicguard.decisions import Decision
from topicguard.feedback import select_for_review

from conftest import write_rows

runner = CliRunner()


def _decision(text: str | None, score: float, *, threshold: float | None = 0.5) -> Decision:
    allowed = score >= (threshold if threshold is not None else 0.5)
    return Decision(
        time="2026-01-01T00:00:00.000+00:00",
        allowed=allowed,
        score=score,
        threshold=threshold,
        lang="en",
        text=text,
    )


LOG = [
    *[_decision("write me a poem about the sea", 0.02)] * 2,
    *[_decision("Write me a POEM about the sea!!", 0.03)] * 2,  # the same, spelled otherwise
    _decision("pls write me a poem about the sea", 0.01),  # a near-duplicate
    *[_decision("tell me a joke", 0.02)] * 3,
    _decision("and to Canada?", 0.45),  # unsure, once
    *[_decision("how much is it", 0.6)] * 2,  # unsure, allowed, twice
    *[_decision("where is my parcel", 0.98)] * 10,  # confidently allowed: not worth a look
    _decision(None, 0.3),  # no text: skipped
]


def test_unsure_first_then_blocked_most_frequent_first_near_duplicates_collapsed() -> None:
    rows = select_for_review(LOG)
    assert [(r.text, r.count, r.reason) for r in rows] == [
        ("how much is it", 2, "unsure"),
        ("and to Canada?", 1, "unsure"),
        ("write me a poem about the sea", 5, "blocked"),
        ("tell me a joke", 3, "blocked"),
    ]
    poem = rows[2]
    assert poem.verdict == "blocked" and poem.lang == "en"
    assert poem.score == pytest.approx((0.02 * 2 + 0.03 * 2 + 0.01) / 5)
    assert rows[0].verdict == "allowed"
    assert [r.text for r in select_for_review(LOG, blocked=False)] == [
        "how much is it",
        "and to Canada?",
    ]
    assert [r.text for r in select_for_review(LOG, unsure=False)] == [
        "write me a poem about the sea",
        "tell me a joke",
    ]
    assert [r.text for r in select_for_review(LOG, sample=3)] == [
        "how much is it",
        "and to Canada?",
        "write me a poem about the sea",
    ]
    # a band given on the command line replaces the one around each logged threshold
    narrow = select_for_review(LOG, band=(0.4, 0.5))
    assert [(r.text, r.reason) for r in narrow][:1] == [("and to Canada?", "unsure")]
    assert "how much is it" not in {r.text for r in narrow}  # allowed, outside the band
    # a log without thresholds uses the default band
    bare = [_decision("and to Canada?", 0.3, threshold=None)]
    assert select_for_review(bare)[0].reason == "unsure"


def test_selection_errors() -> None:
    with pytest.raises(DataError, match="written without --log-texts"):
        select_for_review([_decision(None, 0.1), _decision(None, 0.9)])
    with pytest.raises(DataError, match="LOW:HIGH"):
        select_for_review(LOG, band=(0.7, 0.3))
    assert select_for_review([]) == []


def _log_file(path: Path, decisions: list[Decision]) -> Path:
    rows = []
    for d in decisions:
        row: dict[str, Any] = {
            "time": d.time,
            "verdict": "allowed" if d.allowed else "blocked",
            "score": d.score,
            "threshold": d.threshold,
            "lang": d.lang,
        }
        if d.text is not None:
            row["text"] = d.text
        rows.append(row)
    return write_rows(path, rows)


def test_feedback_command_reads_rotated_logs(tmp_path: Path) -> None:
    log = _log_file(tmp_path / "d.jsonl", LOG[:5])
    _log_file(tmp_path / "d.jsonl.1", LOG[5:])
    out = tmp_path / "to_review.jsonl"
    result = runner.invoke(app, ["feedback", str(log), "--out", str(out), "--band", "0.4:0.7"])
    assert result.exit_code == 0, result.output
    assert "4 texts to review (2 unsure, 2 blocked)" in result.stdout
    rows = read_rows(out)
    assert [set(r) for r in rows] == [{"text", "lang", "score", "verdict", "count", "reason"}] * 4
    assert rows[2]["text"] == "write me a poem about the sea" and rows[2]["count"] == 5

    bare = write_rows(tmp_path / "bare.jsonl", [{"verdict": "allowed", "score": 0.9}])
    for args, message in (
        ([str(bare)], "written without --log-texts"),
        ([str(log), "--band", "0.9"], "--band 0.9: write it LOW:HIGH"),
        ([str(tmp_path / "missing.jsonl")], "decision log not found"),
    ):
        result = runner.invoke(app, ["feedback", *args, "--out", str(tmp_path / "x.jsonl")])
        assert result.exit_code == 1, result.output
        assert message in result.stderr
        assert not (tmp_path / "x.jsonl").exists()


def _judge(request: dict[str, Any], number: int) -> Reply:
    on_topic = "parcel" in user_text(request) or "refund" in user_text(request)
    return Reply(content=f'{{"reasoning": "r", "verdict": {"true" if on_topic else "false"}}}')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(model: Path, log: Path, port: int) -> subprocess.Popen[str]:
    code = "import sys; from topicguard.cli import main; sys.argv[0] = 'topicguard'; main()"
    args = ["serve", str(model), "--port", str(port), "--log", str(log), "--log-texts"]
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_the_loop_end_to_end(
    tiny_guard: Path, tiny_bert: Path, small_dataset: Path, tmp_path: Path
) -> None:
    """serve --log-texts -> requests -> feedback -> review (fake LLM) -> train on both."""
    log, port = tmp_path / "decisions.jsonl", _free_port()
    server = _serve(tiny_guard, log, port)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.communicate()[0]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.2)
        texts = ["where is my parcel SB1234567890", "refund for my lost parcel", "tell me a joke"]
        with httpx.Client(base_url=url, timeout=30) as client:
            for _ in range(3):
                response = client.post("/v1/classify", json={"texts": texts})
                assert response.status_code == 200, response.text
            messages = [{"role": "user", "content": "Tell me a joke!"}]
            assert client.post("/v1/classify", json={"messages": messages}).status_code == 200
    finally:
        server.send_signal(signal.SIGINT)  # a graceful stop closes (flushes) the log
        output = server.communicate(timeout=60)[0]
    assert server.returncode == 0, output
    lines = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 10 and all("text" in line for line in lines)

    to_review, reviewed = tmp_path / "to_review.jsonl", tmp_path / "reviewed.jsonl"
    # a random tiny guard's scores all sit near 0.5: take every decision as unsure
    args = ["feedback", str(log), "--out", str(to_review), "--band", "0:1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = read_rows(to_review)
    assert sorted(r["text"] for r in rows) == sorted(texts)  # the joke twice: one row
    assert {r["text"]: r["count"] for r in rows}["tell me a joke"] == 4
    assert all("label" not in r for r in rows)

    with FakeLLM(_judge) as fake:
        args = ["review", str(to_review), "--spec", _spec(), "--out", str(reviewed)]
        args += ["--base-url", fake.base_url, "--model", "judge"]
        args += ["--cache-dir", str(tmp_path / "cache")]
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    labelled = {e.text: e.label for e in read_dataset(reviewed)}
    assert labelled == {texts[0]: True, texts[1]: True, texts[2]: False}

    args = ["train", "--data", str(small_dataset), "--data", str(reviewed)]
    args += ["--base-model", str(tiny_bert), "--out", str(tmp_path / "guard2")]
    args += ["--epochs", "1", "--validation-size", "0.25", "--max-length", "32"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metadata = json.loads((tmp_path / "guard2" / "topicguard.json").read_text())
    assert str(reviewed) in metadata["data"]["files"]


def _spec() -> str:
    from topicguard.spec import bundled_example

    return str(bundled_example())

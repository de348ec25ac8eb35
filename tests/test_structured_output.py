"""generate and review through the CLI against servers that refuse structured output the
way real ones do, take none at all, or refuse every request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fake_llm import FakeLLM, Reply, refusing, response_format, user_text
from typer.testing import CliRunner

from topicguard.cli import app
from topicguard.spec import bundled_example

runner = CliRunner()
SPEC = str(bundled_example())


_ON = (
    "where is my parcel",
    "my package never arrived",
    "how much to ship a box to Lyon",
    "can you pick up a crate tomorrow",
    "customs fees for shoes to Canada",
    "change my address",
    "delivery was left at the wrong door",
    "book a courier for friday",
    "track SB1234567890",
    "claim for a damaged lamp",
    "opening hours on sunday",
    "return label please",
)
_OFF = (
    "write me a poem",
    "capital of peru",
    "recipe for banana bread",
    "set a timer",
    "debug my python code",
    "who won the match",
    "tell me a joke",
    "translate hello to thai",
    "best laptop to buy",
    "explain quantum physics",
    "plan my wedding",
    "stock tips today",
)


def _generator(request: dict[str, Any], number: int) -> Reply:
    """A batch of four queries not seen in other batches, as a fenced block in chatty text."""
    at = 2 * (number % 6)
    queries = [
        {"text": text, "on_topic": True, "category": "tracking"} for text in _ON[at : at + 2]
    ] + [{"text": text, "on_topic": False, "category": "writing"} for text in _OFF[at : at + 2]]
    return Reply(content=f"Sure!\n```json\n{json.dumps({'queries': queries})}\n```")


def _judge(request: dict[str, Any], number: int) -> Reply:
    on_topic = any(text in user_text(request) for text in _ON)
    return Reply(content=f'{{"reasoning": "r", "verdict": {str(on_topic).lower()}}}')


def _generate(url: str, tmp_path: Path, *extra: str) -> Any:
    args = ["generate", SPEC, "--n", "8", "--out", str(tmp_path / "raw.jsonl")]
    args += ["--base-url", url, "--batch-size", "4", "--cache-dir", str(tmp_path / "c")]
    return runner.invoke(app, [*args, "--max-retries", "1", *extra])


def _review(url: str, tmp_path: Path, *extra: str) -> Any:
    args = ["review", str(tmp_path / "raw.jsonl"), "--spec", SPEC]
    args += ["--out", str(tmp_path / "reviewed.jsonl"), "--base-url", url]
    return runner.invoke(
        app, [*args, "--cache-dir", str(tmp_path / "c"), "--max-retries", "1", *extra]
    )


def _one_error_line(stderr: str) -> bool:
    """One ``error:`` line and no traceback (progress logs may come before it)."""
    lines = stderr.strip().splitlines()
    return (
        lines[-1].startswith("error: ")
        and "Traceback" not in stderr
        and len([line for line in lines if line.startswith("error")]) == 1
    )


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generate_and_review_tell_the_mode_and_fall_back_once(tmp_path: Path) -> None:
    # llama-cpp-python's answer to json_schema: HTTP 500
    with FakeLLM(refusing(_generator, ("json_schema",), 500)) as fake:
        result = _generate(fake.base_url, tmp_path, "--max-tokens", "300")
        assert result.exit_code == 0, result.output
        assert {r["max_tokens"] for r in fake.requests} == {300}
        lines = result.stdout.splitlines()
        assert (
            "structured output by JSON mode held to the schema; the endpoint refused " in lines[0]
        )
        assert f"{tmp_path / 'raw.jsonl'}: 8 queries" in result.stdout
        modes = [response_format(r) for r in fake.requests]
        assert modes.count("json_schema") == 1  # the first batch goes alone
        assert modes[1:] == ["json_object_schema"] * (len(modes) - 1)
        assert "0 retries" in result.stdout
    # a server that takes no structured output at all: JSON read from free text
    refused = ("json_schema", "json_object_schema", "json_object")
    with FakeLLM(refusing(_judge, refused, 422)) as fake:
        result = _review(fake.base_url, tmp_path)
        assert result.exit_code == 0, result.output
        assert "structured output by free text" in result.stdout.splitlines()[0]
        assert "8 rows judged: 4 on topic, 4 off topic, 0 without a verdict" in result.stdout
        # one refused call per mode on the first row, then free text for every row
        assert [response_format(r) for r in fake.requests[:3]] == list(refused)
        assert all(response_format(r) is None for r in fake.requests[3:])
        assert len(fake.requests) == 3 + 8
    assert [r["label"] for r in _rows(tmp_path / "reviewed.jsonl")] == [
        True,
        True,
        False,
        False,
    ] * 2


def test_a_server_that_refuses_everything_fails_in_one_line_and_resume_continues(
    tmp_path: Path,
) -> None:
    raw = tmp_path / "raw.jsonl"
    with FakeLLM(lambda request, number: Reply(status=500)) as fake:
        result = _generate(fake.base_url, tmp_path)
        assert result.exit_code == 1
        assert _one_error_line(result.stderr)
        assert "still failing after 2 attempts" in result.stderr
        assert len(fake.requests) == 2  # the first batch alone, retried once
    assert not raw.exists()  # nothing half-written
    with FakeLLM(_generator) as fake:
        result = _generate(fake.base_url, tmp_path, "--resume")
        assert result.exit_code == 0, result.output
    assert len(_rows(raw)) == 8


def test_resume_against_a_dead_server_stops_in_one_line_keeping_the_rows(tmp_path: Path) -> None:
    raw = tmp_path / "raw.jsonl"
    with FakeLLM(_generator) as fake:
        assert _generate(fake.base_url, tmp_path).exit_code == 0
    with FakeLLM(lambda request, number: Reply(status=503)) as fake:
        # generate asked for more: its first new batch fails, nothing is rewritten
        result = _generate(fake.base_url, tmp_path, "--resume", "--n", "12")
        assert result.exit_code == 1 and "still failing" in result.stderr
        assert _one_error_line(result.stderr)
        assert len(_rows(raw)) == 8
        # review's first row is cached from no earlier run: it stops at once too
        before = len(fake.requests)
        result = _review(fake.base_url, tmp_path)
        assert result.exit_code == 1 and "still failing" in result.stderr
        assert len(fake.requests) - before == 2
    assert not (tmp_path / "reviewed.jsonl").exists()
    with FakeLLM(_judge) as fake:
        result = _review(fake.base_url, tmp_path, "--resume")
        assert result.exit_code == 0, result.output
    assert len(_rows(tmp_path / "reviewed.jsonl")) == 8


def test_generate_stops_when_a_whole_wave_fails_mid_run(tmp_path: Path) -> None:
    def reply(request: dict[str, Any], number: int) -> Reply:
        return _generator(request, number) if number == 1 else Reply(status=503)

    with FakeLLM(reply) as fake:
        result = _generate(fake.base_url, tmp_path, "--n", "40")
        assert result.exit_code == 1
        assert "the last 8 batches all failed" in result.stderr  # one wave of --concurrency 8
        assert "4 rows are in" in result.stderr and "rerun with --resume" in result.stderr
    assert len(_rows(tmp_path / "raw.jsonl")) == 4


def test_generate_one_batch_at_a_time_survives_a_failed_batch(tmp_path: Path) -> None:
    answered: list[int] = []

    def flaky(request: dict[str, Any], number: int) -> Reply:
        if number in (2, 3, 4, 5):  # the second and third batches, each tried twice
            return Reply(status=503)
        answered.append(number)
        return _generator(request, len(answered))

    with FakeLLM(flaky) as fake:
        result = _generate(fake.base_url, tmp_path, "--n", "12", "--concurrency", "1")
        assert result.exit_code == 0, result.output
        assert "2 failed" in result.stdout
    assert len(_rows(tmp_path / "raw.jsonl")) == 12
    # three failed batches in a row end it, one at a time as a wave at a time
    (tmp_path / "raw.jsonl").unlink()
    with FakeLLM(
        lambda request, number: _generator(request, 1) if number == 1 else Reply(status=503)
    ) as fake:
        result = _generate(fake.base_url, tmp_path, "--n", "12", "--concurrency", "1")
        assert result.exit_code == 1 and _one_error_line(result.stderr)
        assert "the last 3 batches all failed" in result.stderr
        assert len(fake.requests) == 1 + 3 * 2
    assert len(_rows(tmp_path / "raw.jsonl")) == 4


def _write_raw(path: Path, texts: list[str]) -> None:
    rows = [{"text": text, "label": text in _ON, "category": "c"} for text in texts]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_a_row_the_endpoint_refuses_never_stops_a_resumed_review(tmp_path: Path) -> None:
    too_long = "where is my parcel " * 40

    def reply(request: dict[str, Any], number: int) -> Reply:
        if too_long in user_text(request):
            return Reply(status=400, message="Requested tokens exceed context window of 512")
        return _judge(request, number)

    _write_raw(tmp_path / "raw.jsonl", [*_ON[:4], too_long, *_OFF[:3]])
    with FakeLLM(reply) as fake:
        for run in range(2):
            # the rerun's only live request is the refused row: it is kept, not a stop
            result = _review(fake.base_url, tmp_path, *(["--resume"] if run else []))
            assert result.exit_code == 1 and "1 rows got no answer" in result.stderr
            assert "8 rows judged: 4 on topic, 3 off topic, 1 without a verdict" in result.stdout
        assert len(fake.requests) == 8 + 1
    rows = _rows(tmp_path / "reviewed.jsonl")
    assert [r["label"] is None for r in rows] == [False] * 4 + [True] + [False] * 3
    assert "context window" in rows[4]["review_votes"][0]["error"]


def test_a_judge_that_refuses_every_request_stops_the_review(tmp_path: Path) -> None:
    _write_raw(tmp_path / "raw.jsonl", [*_ON[:4], *_OFF[:4]])
    with FakeLLM(lambda request, number: Reply(status=400, message="Model Not Exist")) as fake:
        result = _review(fake.base_url, tmp_path, "--concurrency", "1")
        assert result.exit_code == 1 and _one_error_line(result.stderr)
        assert "refused the first 3 requests of the run" in result.stderr
        assert "Model Not Exist" in result.stderr
        assert len(fake.requests) == 3
    assert not (tmp_path / "reviewed.jsonl").exists()


def test_a_resumed_generate_gets_a_batch_budget_for_the_rows_it_lacks(tmp_path: Path) -> None:
    with FakeLLM(_generator) as fake:
        assert _generate(fake.base_url, tmp_path).exit_code == 0  # 8 rows
    with FakeLLM(lambda request, number: Reply(content="no JSON at all")) as fake:
        result = _generate(fake.base_url, tmp_path, "--resume", "--n", "9")
        assert result.exit_code == 1 and _one_error_line(result.stderr)
        # one row missing: one batch, and four times as many, plus four
        assert "only 8 of 9 rows after 8 batches (0 failed, 8 unparsed" in result.stderr
        assert len(fake.requests) == 8

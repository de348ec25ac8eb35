"""generate and review against a fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fake_llm import FakeLLM, Reply, fake_settings, user_text
from typer.testing import CliRunner

from topicguard import DataError, LLMError
from topicguard.cli import app
from topicguard.data import read_dataset
from topicguard.generate import generate_rows, plan_slice
from topicguard.llm import LLMSettings
from topicguard.review import parse_verdict, review_rows
from topicguard.spec import bundled_example, load_spec

from conftest import REFERENCE_DIR, requires_reference, write_rows

SPEC = load_spec(bundled_example())
runner = CliRunner()


def _settings(url: str, tmp_path: Path, **kwargs: Any) -> LLMSettings:
    return fake_settings(url, tmp_path, **{"max_retries": 2, **kwargs})


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("<think>long musing about parcels</think>\n\ntrue", True),
        ("<think>x</think>\n\nfalse", False),
        ('{"reasoning": "about tracking", "verdict": true}', True),
        ('```json\n{"verdict": "False"}\n```', False),
        ("Verdict: **Invalid**", False),
        ("The answer is yes.", True),
        ("Failed attempt", None),
        ("", None),
        ("true or false? hard to say", None),
        ("<think>it is true that ...", None),  # cut off inside the reasoning
    ],
)
def test_parse_verdict(answer: str, expected: bool | None) -> None:
    assert parse_verdict(answer) is expected


@requires_reference()
def test_parse_verdict_recovers_every_reference_verdict() -> None:
    import pandas as pd

    frame = pd.read_excel(REFERENCE_DIR / "rev_guardrail_r1.xlsx")
    labelled = frame.dropna(subset=["r1_review_extracted"])
    assert len(labelled) == 2207
    for answer, expected in zip(
        labelled["r1_review_complete"], labelled["r1_review_extracted"], strict=True
    ):
        assert parse_verdict(answer) is (str(expected) == "True"), answer[-200:]


def _judge(request: dict[str, Any], number: int) -> Reply:
    text = user_text(request)
    if "gibberish" in text:
        return Reply(content="I cannot decide.")
    on_topic = "parcel" in text
    return Reply(
        content=f'<think>checking policy</think>\n{{"reasoning": "r", '
        f'"verdict": {"true" if on_topic else "false"}}}'
    )


def test_review_keeps_reasoning_marks_disagreements_and_resumes(tmp_path: Path) -> None:
    rows = [
        {"text": "where is my parcel", "label": True, "category": "tracking"},
        {"text": "parcel for my neighbour", "label": False, "category": "misuse"},
        {"text": "tell me a joke", "label": False, "category": "fun"},
        {"text": "gibberish xyz", "label": True, "category": "fun"},
    ]
    out = tmp_path / "reviewed.jsonl"
    with FakeLLM(_judge) as fake:
        reviewed, summary, usages = review_rows(
            rows, SPEC, [_settings(fake.base_url, tmp_path)], out=out
        )
        assert [r["label"] for r in reviewed] == [True, True, False, None]
        assert [r["agrees"] for r in reviewed] == [True, False, True, None]
        assert reviewed[0]["review_reasoning"] == "checking policy"
        assert reviewed[1]["generator_label"] is False
        assert summary.disagreements == 1 and summary.unparsed == 1
        assert summary.by_category["misuse"]["disagreements"] == 1
        assert usages[0].calls == 4
        assert len(fake.requests) == 4
        # a rerun (say, after a crash) is answered from the cache
        review_rows(rows, SPEC, [_settings(fake.base_url, tmp_path)], out=out)
        assert len(fake.requests) == 4
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) == 4 and {r["text"] for r in written} == {r["text"] for r in rows}
    # the reviewed file trains directly: its label is the judge's, unparsed rows are dropped
    assert [e.label for e in read_dataset(out)] == [True, True, False]


def test_review_majority_vote(tmp_path: Path) -> None:
    def reply(request: dict[str, Any], number: int) -> Reply:
        # two of three samples say true
        return Reply(content="true" if number % 3 else "false")

    with FakeLLM(reply) as fake:
        reviewed, _, _ = review_rows(
            [{"text": "hm", "label": True}], SPEC, [_settings(fake.base_url, tmp_path)], votes=3
        )
        assert len(fake.requests) == 3
        assert Counter(v["verdict"] for v in reviewed[0]["review_votes"]) == {True: 2, False: 1}
        assert reviewed[0]["label"] is True
        assert all(r["temperature"] > 0 for r in fake.requests)


def test_review_bad_input(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="row 2 has no text"):
        review_rows([{"text": "a"}, {"text": " "}], SPEC, [], votes=1)
    with pytest.raises(DataError, match="at least 1"):
        review_rows([{"text": "a"}], SPEC, [], votes=0)


def _generator(counter: dict[str, int]) -> Any:
    """Answers each batch with 10 queries; some repeat across batches, one batch is junk."""

    def reply(request: dict[str, Any], number: int) -> Reply:
        prompt = user_text(request)
        counter[prompt] = counter.get(prompt, 0) + 1
        if number == 2:
            return Reply(content="Sorry, here you go: {queries: oops")
        queries = [
            {
                "text": f"where is parcel number {number * 100 + i} today",
                "on_topic": True,
                "category": "tracking",
            }
            for i in range(5)
        ]
        queries += [
            {
                "text": f"write a song about topic {number * 100 + i} please",
                "on_topic": False,
                "category": "writing",
            }
            for i in range(4)
        ]
        queries.append(
            {"text": "what's the weather", "on_topic": False, "category": "assistant_tasks"}
        )  # the same in every batch
        return Reply(content=json.dumps({"queries": queries}))

    return reply


def test_generate_reaches_n_without_duplicates_and_resumes_without_repeat_calls(
    tmp_path: Path,
) -> None:
    counter: dict[str, int] = {}
    out = tmp_path / "raw.jsonl"
    with FakeLLM(_generator(counter)) as fake:
        rows, stats, usage = generate_rows(
            SPEC, _settings(fake.base_url, tmp_path), 25, out=out, batch_size=10, seed=3
        )
        assert len(rows) == 25
        assert len({r["text"] for r in rows}) == 25
        assert stats.unparsed_batches == 1
        assert stats.duplicates_dropped >= 1
        assert all(set(r) == {"text", "label", "category", "lang", "source", "batch"} for r in rows)
        assert len([json.loads(x) for x in out.read_text().splitlines()]) == 25
        calls = len(fake.requests)
        # "killed" at 25 and restarted for 40: the first rows come from the file, no
        # prompt is asked twice, and the total is exact
        rows, _, _ = generate_rows(
            SPEC,
            _settings(fake.base_url, tmp_path),
            40,
            out=out,
            batch_size=10,
            seed=3,
            resume=True,
        )
        assert len(rows) == 40 and len({r["text"] for r in rows}) == 40
        assert len(fake.requests) > calls
        assert max(counter.values()) == 1


def test_generate_slices_differ_and_follow_the_spec() -> None:
    slices = [plan_slice(SPEC, i, batch_size=50, seed=0) for i in range(12)]
    assert len({s.on_focus for s in slices}) == len(SPEC.allowed_topics)
    assert len({(s.tone, s.length, s.phrasing) for s in slices}) > 6
    assert all(s.n_on + s.n_off == 50 and s.n_hard > 0 and s.n_jailbreak > 0 for s in slices)
    assert plan_slice(SPEC, 5, batch_size=50, seed=0) == slices[5]


def test_generate_stops_cleanly_when_the_endpoint_is_down(tmp_path: Path) -> None:
    out = tmp_path / "raw.jsonl"
    with FakeLLM(lambda request, number: Reply(status=503)) as fake:
        with pytest.raises(LLMError, match="still failing"):
            generate_rows(SPEC, _settings(fake.base_url, tmp_path), 10, out=out, batch_size=10)
    assert not out.exists()  # nothing half-written
    with pytest.raises(DataError, match="--n must be positive"):
        generate_rows(SPEC, _settings("http://127.0.0.1:9/v1", tmp_path), 0, out=out)


def test_cli_generate_and_review(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter: dict[str, int] = {}
    spec = str(bundled_example())
    raw, reviewed = tmp_path / "raw.jsonl", tmp_path / "reviewed.jsonl"
    with FakeLLM(_generator(counter)) as fake:
        args = [
            "generate",
            spec,
            "--n",
            "12",
            "--out",
            str(raw),
            "--base-url",
            fake.base_url,
            "--model",
            "fake",
            "--batch-size",
            "10",
            "--cache-dir",
            str(tmp_path / "c"),
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert f"{raw}: 12 queries" in result.stdout
        again = runner.invoke(app, args)
        assert again.exit_code == 1 and "pass --resume" in again.stderr
    with FakeLLM(_judge) as fake:
        args = [
            "review",
            str(raw),
            "--spec",
            spec,
            "--out",
            str(reviewed),
            "--base-url",
            fake.base_url,
            "--model",
            "judge",
            "--cache-dir",
            str(tmp_path / "c"),
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "12 rows judged" in result.stdout
    assert len(read_dataset(reviewed)) == 12
    monkeypatch.delenv("TOPICGUARD_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [
            "generate",
            spec,
            "--n",
            "5",
            "--out",
            str(tmp_path / "x.jsonl"),
            "--base-url",
            "https://api.example.com/v1",
        ],
    )
    assert result.exit_code == 1
    assert "no API key" in result.stderr
    assert not (tmp_path / "x.jsonl").exists()
    result = runner.invoke(app, ["generate", spec, "--n", "0", "--out", "y.jsonl"])
    assert result.exit_code == 2


def test_cli_review_reads_rows_without_labels(tmp_path: Path) -> None:
    data = write_rows(
        tmp_path / "q.jsonl", [{"text": "where is my parcel"}, {"text": "tell me a joke"}]
    )
    with FakeLLM(_judge) as fake:
        result = runner.invoke(
            app,
            [
                "review",
                str(data),
                "--spec",
                str(bundled_example()),
                "--out",
                str(tmp_path / "r.jsonl"),
                "--base-url",
                fake.base_url,
                "--cache-dir",
                str(tmp_path / "c"),
            ],
        )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == [True, False]
    assert all(r["agrees"] is None and r["generator_label"] is None for r in rows)


def test_cli_review_fails_loudly_when_rows_get_no_answer(tmp_path: Path) -> None:
    def reply(request: dict[str, Any], number: int) -> Reply:
        return _judge(request, number) if number == 1 else Reply(status=503)

    data = write_rows(
        tmp_path / "q.jsonl", [{"text": "where is my parcel"}, {"text": "tell me a joke"}]
    )
    out = tmp_path / "r.jsonl"
    with FakeLLM(reply) as fake:
        result = runner.invoke(
            app,
            [
                "review",
                str(data),
                "--spec",
                str(bundled_example()),
                "--out",
                str(out),
                "--base-url",
                fake.base_url,
                "--max-retries",
                "0",
                "--cache-dir",
                str(tmp_path / "c"),
            ],
        )
    assert result.exit_code == 1
    assert "1 rows got no answer from the API" in result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[1]["label"] is None and "still failing" in rows[1]["review_votes"][0]["error"]
    empty = runner.invoke(
        app,
        [
            "review",
            str(data),
            "--spec",
            str(bundled_example()),
            "--out",
            str(tmp_path / "e.jsonl"),
            "--judges",
            ",",
        ],
    )
    assert empty.exit_code == 1 and "--judges names no model" in empty.stderr
    csv = runner.invoke(
        app,
        ["review", str(data), "--spec", str(bundled_example()), "--out", str(tmp_path / "r.csv")],
    )
    assert csv.exit_code == 1 and "name it *.jsonl" in csv.stderr

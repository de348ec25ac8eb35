"""Ray (``pip install 'topicguard[ray]'``) in local mode: batch scoring on Ray Data gives the
local engine's verdicts, and the Ray Serve deployment answers the ``serve`` contract.
Ray starts once for the whole session (``ray.init(num_cpus=2)``)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_score import TEXTS, expected, partitions, read_output
from typer.testing import CliRunner

from topicguard import TopicGuard
from topicguard.cli import app

ray = pytest.importorskip(
    "ray", reason="Ray is not installed: pip install 'topicguard[ray]' to run these tests"
)

runner = CliRunner()


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("output_format", ["parquet", "jsonl"])
def test_ray_data_scoring_gives_the_local_verdicts(
    ray_local: Any, tiny_guard: Path, tmp_path: Path, output_format: str
) -> None:
    source = partitions(tmp_path / "in")
    results = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        args = ["classify", str(tiny_guard), "--input", str(source), "--output", str(out)]
        options = ["--engine", engine, "--output-format", output_format]
        result = runner.invoke(app, [*args, *options])
        assert result.exit_code == 0, result.output
        assert all(p.suffix == f".{output_format}" for p in out.iterdir())
        results[engine] = read_output(out)
    local, on_ray = results["local"], results["ray"]
    assert list(on_ray.columns) == list(local.columns)
    assert on_ray[["text", "label", "allowed"]].equals(local[["text", "label", "allowed"]])
    assert on_ray["score"].tolist() == pytest.approx(local["score"].tolist(), abs=1e-6)
    assert sorted(on_ray["text"]) == sorted(TEXTS)
    assert on_ray["label"].tolist() == expected(tiny_guard)["label"].tolist()


def test_ray_data_without_a_text_column_is_one_line_and_leaves_nothing(
    ray_local: Any, tiny_guard: Path, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"message": "hi"}\n', encoding="utf-8")
    out = tmp_path / "out"
    args = ["classify", str(tiny_guard), "--input", str(tmp_path / "in"), "--output", str(out)]
    result = runner.invoke(app, [*args, "--engine", "ray"])
    assert result.exit_code == 1 and "no 'text' column" in result.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["in"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ray_serve_url(ray_local: Any, tiny_guard: Path) -> Iterator[str]:
    from ray import serve

    from topicguard.integrations.ray import deployment

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(deployment(tiny_guard, replicas=1), name="topicguard", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the deployment did not get ready"
        time.sleep(0.2)
    yield url
    serve.shutdown()


def test_ray_serve_answers_the_classify_contract(ray_serve_url: str, tiny_guard: Path) -> None:
    guard = TopicGuard.load(tiny_guard)
    with httpx.Client(base_url=ray_serve_url, timeout=30) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        response = client.post("/v1/classify", json={"texts": TEXTS})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == tiny_guard.name
        want = [v.to_dict() for v in guard.classify(TEXTS)]
        assert [r["allowed"] for r in body["results"]] == [w["allowed"] for w in want]
        assert [r["score"] for r in body["results"]] == pytest.approx(
            [w["score"] for w in want], abs=1e-6
        )
        one = client.post("/v1/classify", json={"text": TEXTS[0]}).json()
        assert one["results"][0]["label"] == want[0]["label"]
        messages = [{"role": "user", "content": "where is my parcel"}]
        assert client.post("/v1/classify", json={"messages": messages}).status_code == 200
        metrics = client.get("/metrics").text
        assert 'topicguard_requests_total{status="200"}' in metrics


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 422, "body"),
        (b'{"text": "hi", "texts": ["a"]}', 422, "exactly one of"),
        (b'{"texts": []}', 422, "at least one text"),
        (b'{"text": "   "}', 422, "is empty"),
        (
            b'{"texts": ["a"] }'.replace(b'["a"]', b"[" + b",".join([b'"a"'] * 65) + b"]"),
            413,
            "at most 64",
        ),
        (b'{"text": "' + b"x" * 4001 + b'"}', 413, "at most 4000"),
    ],
)
def test_ray_serve_refuses_bad_bodies_like_serve(
    ray_serve_url: str, body: bytes, status: int, message: str
) -> None:
    response = httpx.post(f"{ray_serve_url}/v1/classify", content=body, timeout=30)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]

"""The Dockerfile: checked line by line everywhere, built and smoke-tested where a container
engine answers (``docker info``); without one the build test skips and says why."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each line, continuations joined, comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_image_installs_cpu_torch_through_the_constraints() -> None:
    steps = instructions()
    assert [a for i, a in steps if i == "FROM"][-1].startswith("python:3.11-slim")
    env = " ".join(a for i, a in steps if i == "ENV")
    assert "download.pytorch.org/whl/cpu" in env and "HF_HUB_OFFLINE=1" in env
    runs = " ".join(a for i, a in steps if i == "RUN")
    assert "-c constraints.txt" in runs and ".[serve]" in runs
    assert "torch==" in (ROOT / "constraints.txt").read_text(encoding="utf-8")
    copied = " ".join(a for i, a in steps if i == "COPY")
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "src"):
        assert needed in copied
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    assert "!src/" in ignored and "!constraints.txt" in ignored


def test_the_image_serves_from_model_as_a_non_root_user_with_a_readiness_check() -> None:
    steps = instructions()
    users = [a for i, a in steps if i == "USER"]
    assert users and users[-1] not in ("root", "0")
    entry = [a for i, a in steps if i == "ENTRYPOINT"][-1]
    assert '"topicguard", "serve", "/model"' in entry and '"0.0.0.0"' in entry
    health = [a for i, a in steps if i == "HEALTHCHECK"][-1]
    assert "/readyz" in health and "127.0.0.1:8000" in health
    assert [a for i, a in steps if i == "EXPOSE"] == ["8000"]
    # the last stage never runs as root after USER: no RUN follows it
    last_user = max(n for n, (i, _) in enumerate(steps) if i == "USER")
    assert all(i != "RUN" for i, _ in steps[last_user:])


def _engine_answers() -> str | None:
    """None when a container engine answers, else why not."""
    if shutil.which("docker") is None:
        return "no docker client on this machine"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "docker info did not answer within 20 s"
    if info.returncode != 0:
        return "no container engine answers `docker info`"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_the_image_builds_and_answers(request: pytest.FixtureRequest) -> None:
    reason = _engine_answers()
    if reason is not None:
        pytest.skip(f"cannot build the image: {reason}; the Dockerfile is checked line by line")
    import httpx

    tiny_guard = request.getfixturevalue("tiny_guard")  # trained only when it will be used

    tag = f"topicguard-test:{uuid.uuid4().hex[:8]}"
    name = f"topicguard-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=1800)
    port = _free_port()
    try:
        run = ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000"]
        subprocess.run([*run, "-v", f"{tiny_guard}:/model:ro", tag], check=True, timeout=60)
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the container did not get ready"
            time.sleep(1)
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/classify", json={"text": "where is my parcel"}
        )
        assert response.status_code == 200 and len(response.json()["results"]) == 1
        user = subprocess.run(
            ["docker", "exec", name, "id", "-u"], capture_output=True, text=True, check=True
        )
        assert user.stdout.strip() != "0"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)

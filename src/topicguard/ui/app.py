"""The page's routes, mounted on the ``serve`` or the ``proxy`` app by :func:`mount_ui`.

Pages (server-rendered HTML; the little JavaScript they carry calls the JSON routes):
``GET /`` Try it, ``GET /guard`` the guard card, ``GET /review`` the review files and
``GET /review/NAME`` one of them. JSON (errors are ``{"error": "…"}`` with a 4xx, never a 500
for bad input): ``POST /ui/api/try``; ``POST /ui/api/reviews?name=NAME.jsonl`` (the file as the
body, streamed to disk); ``GET /ui/api/reviews/NAME``, and ``POST …/NAME/decisions`` and
``…/NAME/undo``, each answering the file's state. ``/ui/static/*`` and ``/ui/report/*.png``:
the page's own files and the evaluation report's plots. Nothing is fetched from elsewhere.

Every route sits behind the service's optional key (a bearer token, or the key as the password
of HTTP Basic, which a browser asks for once). Routes that change anything also need the
header ``x-topicguard-ui: 1``, which another site's page cannot send without asking first: a
guard on localhost cannot be made to record decisions by a page open in the same browser.
The Content-Security-Policy allows only the page's own scripts, so text shown from a message
or a review file never runs, whatever HTML it holds. Verdicts given here are not counted in
``/metrics`` nor written to the decision log: they are people trying the guard, not traffic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from topicguard._exceptions import DataError
from topicguard._http import HttpProblem, check_page_key, read_body, validation_problems
from topicguard.report import PLOTS
from topicguard.ui.card import explain, guard_card
from topicguard.ui.reviews import DECISIONS, ReviewFile, ReviewFolder, checked_name

__all__ = ["RunGuard", "UiConfig", "mount_ui", "worker_runner"]

logger = logging.getLogger(__name__)

RunGuard = Callable[[Callable[[Any], Any]], Awaitable[Any]]
"""How the page runs work on the guard: ``await run_guard(lambda guard: ...)``, on the
service's worker thread; raises :class:`HttpProblem` (503) while the model loads."""

MAX_UPLOAD_BYTES = 256 * 1024 * 1024
UI_HEADER = "x-topicguard-ui"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
STATIC = {"ui.css": "text/css", "ui.js": "text/javascript"}


@dataclass
class UiConfig:
    """What the page needs besides the guard; the key is never shown or logged."""

    model_dir: Path
    api_key: str | None = field(default=None, repr=False)
    review_dir: Path | None = None  # where review files are kept; None: no reviewing
    report_dir: Path | None = None  # an evaluation report whose plots the card shows
    max_chars: int = 4000  # characters per message tried
    max_turns: int = 32  # user turns per conversation tried
    max_upload_bytes: int = MAX_UPLOAD_BYTES

    def __post_init__(self) -> None:
        if self.report_dir is None and (self.model_dir / "report").is_dir():
            self.report_dir = self.model_dir / "report"


class TryRequest(BaseModel):
    """``{"text": "…"}`` or ``{"turns": ["…", "…"]}`` (user turns, the latest judged)."""

    text: str | None = Field(default=None)
    turns: list[str] | None = Field(default=None)

    @model_validator(mode="after")
    def _one_of(self) -> TryRequest:
        if (self.text is None) == (self.turns is None):
            raise ValueError('send "text" or "turns"')
        return self


class DecisionRequest(BaseModel):
    row: int = Field(ge=0)
    decision: str


def worker_runner(ready: Callable[[], tuple[Any, Any] | None], timeout_s: float) -> RunGuard:
    """A :data:`RunGuard` over a service's worker thread: ``ready()`` gives the loaded guard and
    the executor to run on, or None while the service starts or stops."""

    async def run_guard(work: Callable[[Any], Any]) -> Any:
        loaded = ready()
        if loaded is None:
            raise HttpProblem(503, "the model is still loading", "not_ready")
        guard, executor = loaded
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(executor, work, guard), timeout_s)
        except asyncio.TimeoutError:
            message = f"no answer within {timeout_s:g} s: the guard is busy"
            raise HttpProblem(503, message, "overloaded") from None

    return run_guard


def mount_ui(app: Any, config: UiConfig, run_guard: RunGuard) -> None:
    """Add the page's routes to the Starlette or FastAPI ``app``."""
    ui = _Ui(config, run_guard)
    for path, endpoint, methods in (
        ("/", ui.try_page, ["GET"]),
        ("/guard", ui.guard_page, ["GET"]),
        ("/review", ui.review_page, ["GET"]),
        ("/review/{name}", ui.review_page, ["GET"]),
        ("/ui/static/{name}", ui.static, ["GET"]),
        ("/ui/report/{name}", ui.plot, ["GET"]),
        ("/ui/api/try", ui.try_it, ["POST"]),
        ("/ui/api/reviews", ui.upload, ["POST"]),
        ("/ui/api/reviews/{name}", ui.state, ["GET"]),
        ("/ui/api/reviews/{name}/decisions", ui.decide, ["POST"]),
        ("/ui/api/reviews/{name}/undo", ui.undo, ["POST"]),
    ):
        app.add_route(path, _guarded(ui, endpoint), methods=methods, include_in_schema=False)


def _guarded(ui: _Ui, endpoint: Callable[[Any], Awaitable[Any]]) -> Any:
    """The endpoint behind the key and the write header, its problems answered in JSON (or
    a page, for a page), with the security headers on every answer."""

    async def route(request: Any) -> Any:
        from starlette.responses import JSONResponse

        try:
            check_page_key(request, ui.config.api_key)
            if request.method == "POST" and request.headers.get(UI_HEADER) != "1":
                raise HttpProblem(403, f"send the header '{UI_HEADER}: 1'", "forbidden")
            try:
                response = await endpoint(request)
            except DataError as exc:  # the guard refused the input
                raise HttpProblem(422, str(exc), "bad_input") from None
            except (HttpProblem, asyncio.CancelledError):
                raise
            except Exception:  # noqa: BLE001 - answer and keep serving
                logger.exception("the page failed on %s", request.url.path)
                message = "the page failed on this request; see the log"
                raise HttpProblem(500, message, "error") from None
        except HttpProblem as problem:
            if request.url.path.startswith("/ui/"):
                response = JSONResponse({"error": problem.message}, status_code=problem.status)
            else:
                response = ui.page("error.html", status=problem.status, message=problem.message)
            if problem.status == 401:
                response.headers["www-authenticate"] = 'Basic realm="topicguard", charset="UTF-8"'
        response.headers.update(SECURITY_HEADERS)
        return response

    return route


class _Ui:
    def __init__(self, config: UiConfig, run_guard: RunGuard) -> None:
        self.config = config
        self.run_guard = run_guard
        self.reviews = ReviewFolder(config.review_dir) if config.review_dir else None

    @cached_property
    def templates(self) -> Any:
        import jinja2

        return jinja2.Environment(
            loader=jinja2.PackageLoader("topicguard.ui", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )

    def page(self, template: str, *, status: int = 200, **values: Any) -> Any:
        from starlette.responses import HTMLResponse

        values.setdefault("model", self.config.model_dir.name)
        values.setdefault("page", "error")
        html = self.templates.get_template(template).render(**values)
        return HTMLResponse(html, status_code=status)

    async def try_page(self, request: Any) -> Any:
        return self.page("try.html", page="try", max_chars=self.config.max_chars)

    async def guard_page(self, request: Any) -> Any:
        card = await self.run_guard(
            lambda guard: guard_card(
                guard, backend=guard.backend_name, report_dir=self.config.report_dir
            )
        )
        model_path = str(self.config.model_dir)
        return self.page("guard.html", page="guard", card=card, model_path=model_path)

    async def review_page(self, request: Any) -> Any:
        name = request.path_params.get("name")
        if name is not None:
            await asyncio.to_thread(self._review, name)  # a 404 page for a wrong name
        return self.page(
            "review.html",
            page="review",
            name=name,
            names=self.reviews.names() if self.reviews else [],
            folder=str(self.config.review_dir) if self.config.review_dir else None,
            max_mb=self.config.max_upload_bytes // (1024 * 1024),
        )

    async def static(self, request: Any) -> Any:
        from starlette.responses import Response

        name = request.path_params["name"]
        if name not in STATIC:
            raise HttpProblem(404, f"no file {name}", "not_found")
        body = resources.files("topicguard.ui").joinpath("static", name).read_bytes()
        return Response(body, media_type=STATIC[name], headers={"cache-control": "no-cache"})

    async def plot(self, request: Any) -> Any:
        from starlette.responses import FileResponse

        name = request.path_params["name"]
        report = self.config.report_dir
        if report is None or name not in PLOTS or not (report / name).is_file():
            raise HttpProblem(404, f"no plot {name}", "not_found")
        return FileResponse(report / name, media_type="image/png")

    async def try_it(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        body = _model(TryRequest, await read_body(request, 1_000_000))
        texts = [body.text] if body.text is not None else list(body.turns or [])
        texts = [t for t in texts if t.strip()]
        if not texts:
            raise HttpProblem(422, "type a message to judge", "empty")
        if len(texts) > self.config.max_turns:
            message = f"{len(texts)} turns: at most {self.config.max_turns}"
            raise HttpProblem(413, message, "too_many_turns")
        for text in texts:
            if len(text) > self.config.max_chars:
                message = f"a message has {len(text)} characters: at most {self.config.max_chars}"
                raise HttpProblem(413, message, "too_long")
        return JSONResponse(await self.run_guard(lambda guard: explain(guard, texts)))

    async def upload(self, request: Any) -> Any:
        """The request body, streamed into the review folder, checked, then put under review."""
        from starlette.responses import JSONResponse

        folder = self._folder()
        try:
            name = checked_name(request.query_params.get("name", ""))
        except DataError as exc:
            raise HttpProblem(422, str(exc), "bad_name") from None
        if name in folder.names():
            raise HttpProblem(409, f"a file named {name} is already under review", "exists")
        fd, tmp = folder.upload()
        try:
            size = 0
            with os.fdopen(fd, "wb") as handle:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > self.config.max_upload_bytes:
                        limit = self.config.max_upload_bytes // (1024 * 1024)
                        message = f"{name} is over {limit} MB: review it in parts"
                        raise HttpProblem(413, message, "too_large")
                    handle.write(chunk)
            review = await asyncio.to_thread(folder.add, name, tmp)
        except DataError as exc:
            raise HttpProblem(422, str(exc), "bad_file") from None
        finally:
            tmp.unlink(missing_ok=True)
        return JSONResponse(await self._state(review), status_code=201)

    async def state(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        review = await asyncio.to_thread(self._review, request.path_params["name"])
        return JSONResponse(await self._state(review))

    async def decide(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        review = await asyncio.to_thread(self._review, request.path_params["name"])
        body = _model(DecisionRequest, await read_body(request, 10_000))
        if body.decision not in DECISIONS:
            message = f"decision: one of {', '.join(DECISIONS)}, not {body.decision!r}"
            raise HttpProblem(422, message, "bad_decision")
        if body.row >= len(review):
            raise HttpProblem(422, f"{review.name} has {len(review)} rows", "bad_row")
        await asyncio.to_thread(_decide_and_save, review, body.row, body.decision)
        return JSONResponse(await self._state(review))

    async def undo(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        review = await asyncio.to_thread(self._review, request.path_params["name"])
        await asyncio.to_thread(_undo_and_save, review)
        return JSONResponse(await self._state(review))

    def _folder(self) -> ReviewFolder:
        if self.reviews is None:
            message = "reviewing is off: start the server with --review-dir DIR"
            raise HttpProblem(404, message, "no_review_dir")
        return self.reviews

    def _review(self, name: str) -> ReviewFile:
        try:
            return self._folder().open(name)
        except FileNotFoundError:
            raise HttpProblem(404, f"no file {name} under review", "not_found") from None
        except DataError as exc:
            raise HttpProblem(422, str(exc), "bad_file") from None

    async def _state(self, review: ReviewFile) -> dict[str, Any]:
        """Where the review stands, and the next row with the guard's verdict on it."""
        index = review.next_row()
        state: dict[str, Any] = {
            "name": review.name,
            "rows": len(review),
            "counts": review.counts(),
            "labelled_in_file": review.n_labelled,
            "malformed": [{"line": n, "problem": p} for n, p in review.malformed],
            "n_malformed": review.n_malformed,
            "saved": str(review.reviewed_path) if review.reviewed_path.is_file() else None,
            "can_undo": bool(review.decisions),
            "row": None,
        }
        if index is not None:
            row = await asyncio.to_thread(review.row, index)
            text = row["text"]
            verdict = await self.run_guard(lambda guard: guard.classify([text])[0])
            state["row"] = {
                "index": index,
                "line": review.line(index),
                "text": text,
                "fields": {k: _shown(v) for k, v in row.items() if k != "text"},
                "guard": {k: v for k, v in verdict.to_dict().items() if k != "text"}
                | {"threshold": verdict.threshold},
            }
        return state


def _decide_and_save(review: ReviewFile, row: int, decision: str) -> None:
    review.decide(row, decision)
    review.save()


def _undo_and_save(review: ReviewFile) -> None:
    review.undo()
    review.save()


def _model(model: Any, raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise HttpProblem(422, validation_problems(exc), "invalid_request") from None


def _shown(value: Any) -> str:
    """A row's other field as the page shows it: a short string."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 200 else text[:199] + "…"

"""One client for any OpenAI-compatible chat API (DeepSeek, OpenAI, Fireworks, vLLM,
llama.cpp server, Ollama), built on the official ``openai`` SDK.

What long, paid, rate-limited runs need: bounded concurrency; retries with exponential
backoff and jitter on 429, 5xx, a 200 whose body is an error, timeouts and dropped
connections, honouring ``Retry-After``;
structured output (a JSON schema where the server supports it, else ``json_object`` with
the schema beside it, as llama-cpp-python's server and Together take it, else plain
``json_object``, else the first valid JSON object found in free text or a fenced block);
reasoning models' ``<think>`` text kept apart from the answer; an on-disk cache keyed by
endpoint, model, messages, sampling parameters and structured-output mode, so a rerun or a
resumed run pays only for what is missing; token usage and cost summed over the run.

Servers refuse a ``response_format`` they do not take in different ways: 400 (OpenAI,
vLLM), 422 (FastAPI's validation error), 500 (llama-cpp-python's server wraps that
validation error), or a 200 whose body is an error. Any refusal that names the structured
output steps the client down one mode after that one call, without spending the retry
budget, and the client keeps the lower mode for the rest of the run. The schema beside
``json_object`` matters to small local models: held to it by the server's grammar they
answer in the shape asked for, where plain JSON mode lets them write any JSON at all.

The API key comes from ``TOPICGUARD_API_KEY`` or ``OPENAI_API_KEY`` (or a ``.env`` file) and
is never written anywhere. A server on this machine (localhost) needs no key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from topicguard._exceptions import LLMError, LLMRequestError
from topicguard._io import atomic_write_text

__all__ = [
    "Completion",
    "LLMClient",
    "LLMSettings",
    "ModeCallback",
    "Usage",
    "describe_mode",
    "extract_json",
    "resolve_api_key",
    "split_reasoning",
]

logger = logging.getLogger(__name__)

KEY_VARIABLES = ("TOPICGUARD_API_KEY", "OPENAI_API_KEY")
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
# structured-output modes, best first; "json_object_schema" sends
# {"type": "json_object", "schema": ...}
_MODES = ("json_schema", "json_object_schema", "json_object", "text")
_MODE_NAMES = {
    "json_schema": "JSON schema",
    "json_object_schema": "JSON mode held to the schema",
    "json_object": "JSON mode",
    "text": "free text (the JSON is read out of the answer)",
}
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "response format", "structured")
# "schema" named as a field in an error message ("Unrecognized request argument supplied:
# schema", "'schema'"), not the word in prose ("shorten the messages or the JSON schema")
_SCHEMA_FIELD = re.compile(
    r"""['"`]schema['"`]|\b(?:argument|parameter|field|property|key)s?(?:\s+supplied)?"""
    r"""\s*:\s*['"`]?schema\b""",
    re.IGNORECASE,
)


DEFAULT_CACHE_DIR = Path(".topicguard-cache")  # answers cached here; reruns pay only what is new


@dataclass
class LLMSettings:
    """Where and how to call the model. The key is read from the environment when ``None``."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    concurrency: int = 8
    max_retries: int = 6
    timeout: float = 120.0
    temperature: float = 0.7
    max_tokens: int | None = None
    cache_dir: Path | None = DEFAULT_CACHE_DIR
    backoff_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    price_input_per_million: float | None = None
    price_output_per_million: float | None = None


@dataclass
class Usage:
    """Calls and tokens over a run; cost when prices are configured."""

    calls: int = 0
    cached: int = 0
    failed: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None

    def summary(self) -> str:
        cost = f", cost {self.cost:.4f}" if self.cost is not None else ""
        return (
            f"{self.calls} calls ({self.cached} from cache, {self.failed} failed, "
            f"{self.retries} retries), {self.prompt_tokens} prompt + "
            f"{self.completion_tokens} completion tokens{cost}"
        )


@dataclass
class Completion:
    """One answer: text without reasoning, the reasoning, and the parsed JSON if asked for."""

    content: str
    reasoning: str | None
    finish_reason: str | None
    parsed: Any = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


def resolve_api_key(
    explicit: str | None = None, *, env_file: Path = Path(".env"), variable: str | None = None
) -> str | None:
    """The API key: explicit, else the environment (``variable`` first when given), else a
    ``.env`` file in the current folder."""
    if explicit:
        return explicit
    names = ((variable,) if variable else ()) + KEY_VARIABLES
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    if env_file.is_file():
        for line in env_file.read_text(encoding="utf-8", errors="replace").splitlines():
            name, _, value = line.strip().removeprefix("export ").partition("=")
            if name.strip() in names and value.strip():
                return value.strip().strip("'\"")
    return None


def split_reasoning(text: str) -> tuple[str | None, str]:
    """``(reasoning, answer)``: the ``<think>`` part of a reasoning model's reply, and the rest."""
    match = _THINK.search(text)
    if not match:
        return None, text.strip()
    answer = (text[: match.start()] + text[match.end() :]).strip()
    return match.group(1).strip(), answer


def extract_json(text: str) -> Any:
    """The first valid JSON object (or array) in ``text``: whole, fenced, or embedded."""
    text = text.strip()
    candidates = [text] + [m.group(1).strip() for m in _FENCE.finditer(text)]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, (dict, list)):
            return value
    return None


def describe_mode(mode: str) -> str:
    """A reader's account of a structured-output mode, for logs and the CLI."""
    refused = [_MODE_NAMES[m] for m in _MODES[: _MODES.index(mode)]]
    return _MODE_NAMES[mode] + (f"; the endpoint refused {', '.join(refused)}" if refused else "")


# told the settings of a client and the structured-output mode its endpoint accepted
ModeCallback = Callable[[LLMSettings, str], None]


class _FormatRefused(Exception):
    """The server refused the structured-output mode that one request asked for."""

    def __init__(self, mode: str) -> None:
        super().__init__(mode)
        self.mode = mode


class LLMClient:
    """Async chat client with retries, structured output, cache and usage accounting.

    ``on_mode(settings, mode)`` is called with the structured-output mode of the first
    answer, and again whenever the endpoint makes the client step down.
    """

    def __init__(self, settings: LLMSettings, *, on_mode: ModeCallback | None = None) -> None:
        self.settings = settings
        host = urlparse(settings.base_url).hostname or ""
        local = host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")
        key = resolve_api_key(settings.api_key, variable=settings.api_key_env)
        if key is None and not local:
            names = " or ".join(
                ((settings.api_key_env,) if settings.api_key_env else ()) + KEY_VARIABLES
            )
            raise LLMError(f"no API key: set {names} (or put one in .env) for {settings.base_url}")
        try:
            from openai import AsyncOpenAI
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise LLMError("the openai package is missing: pip install openai") from exc
        # max_retries=0: the SDK would resend a refused json_schema request (a 500) several
        # times before the fallback could see it; our own loop retries only what deserves it.
        self._client = AsyncOpenAI(
            api_key=key or "not-needed",
            base_url=settings.base_url,
            timeout=settings.timeout,
            max_retries=0,
        )
        self._mode = _MODES[0]
        self._reported_mode: str | None = None
        self._on_mode = on_mode
        self._semaphore = asyncio.Semaphore(max(1, settings.concurrency))
        self.usage = Usage()

    @property
    def mode(self) -> str:
        """The structured-output mode requests with a schema use now."""
        return self._mode

    async def complete(
        self,
        messages: Sequence[dict[str, str]],
        *,
        schema: type[Any] | None = None,
        temperature: float | None = None,
        sample: int = 0,
    ) -> Completion:
        """One chat completion. ``schema`` (a pydantic model) asks for structured output;
        ``sample`` tells apart repeated samples of the same prompt (votes) in the cache."""
        temperature = self.settings.temperature if temperature is None else temperature
        while True:
            mode = self._mode if schema is not None else "text"
            key = self._cache_key(messages, schema, temperature, sample, mode)
            cached = self._read_cache(key)
            if cached is not None:
                self.usage.calls += 1
                self.usage.cached += 1
                self._report(schema, mode)
                return self._finish(cached, schema, cached=True)
            try:
                async with self._semaphore:
                    raw = await self._call_with_retries(list(messages), schema, temperature, mode)
            except _FormatRefused as refused:
                self._step_down(refused.mode)
                continue  # the answer for the lower mode may be cached already
            self._write_cache(key, raw)
            self.usage.calls += 1
            self.usage.prompt_tokens += raw["prompt_tokens"]
            self.usage.completion_tokens += raw["completion_tokens"]
            self._add_cost(raw)
            self._report(schema, mode)
            return self._finish(raw, schema, cached=False)

    async def close(self) -> None:
        await self._client.close()

    # -- internals -------------------------------------------------------------------------

    def _step_down(self, refused: str) -> None:
        # step down from the mode the refused request used: concurrent requests may have
        # stepped down already, and a mode is never raised again
        fallback = _MODES[_MODES.index(refused) + 1]
        if _MODES.index(fallback) > _MODES.index(self._mode):
            self._mode = fallback
            logger.info(
                "%s at %s refused %s: structured output falls back to %s",
                self.settings.model,
                self.settings.base_url,
                refused,
                fallback,
            )

    def _report(self, schema: type[Any] | None, mode: str) -> None:
        seen = self._reported_mode
        if schema is None or (seen is not None and _MODES.index(mode) <= _MODES.index(seen)):
            return
        self._reported_mode = mode
        if self._on_mode is not None:
            self._on_mode(self.settings, mode)

    def _request(
        self,
        messages: list[dict[str, str]],
        schema: type[Any] | None,
        temperature: float,
        mode: str,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.settings.model,
            "messages": messages,
            "temperature": temperature,
        }
        if self.settings.max_tokens:
            kwargs["max_tokens"] = self.settings.max_tokens
        if schema is not None and mode != "text":
            kwargs["response_format"] = _response_format(mode, schema)
        return kwargs

    async def _call_with_retries(
        self,
        messages: list[dict[str, str]],
        schema: type[Any] | None,
        temperature: float,
        mode: str,
    ) -> dict[str, Any]:
        """One answer, retried on 429, 5xx, a 200 whose body is an error, timeouts and dropped
        connections. Raises ``_FormatRefused`` after the first call the server refuses for
        its response_format."""
        import openai

        kwargs = self._request(messages, schema, temperature, mode)
        sent = mode if "response_format" in kwargs else None
        attempt = 0
        while True:
            failure: Exception
            try:
                response = await self._client.chat.completions.create(**kwargs)
            except openai.APIStatusError as exc:
                body = exc.body if exc.body is not None else str(exc)
                if sent is not None and _about_response_format(body, sent):
                    raise _FormatRefused(sent) from exc
                self._raise_unless_retryable(exc)
                failure = exc
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                failure = exc
            else:
                error = _body_error(response)
                if error is None:
                    return _raw_answer(response)
                if sent is not None and _about_response_format(error, sent):
                    raise _FormatRefused(sent)
                # an overloaded or failing server may say so in a 200: retried like a 5xx
                failure = LLMError(f"the API answered with an error: {_error_summary(error)}")
            if attempt >= self.settings.max_retries:
                self.usage.failed += 1
                raise LLMError(
                    f"{self.settings.base_url} still failing after "
                    f"{attempt + 1} attempts: {_short(failure)}"
                ) from failure
            delay = self._delay(attempt, failure)
            attempt += 1
            self.usage.retries += 1
            logger.debug("retry %d in %.1f s after %s", attempt, delay, type(failure).__name__)
            await asyncio.sleep(delay)

    def _raise_unless_retryable(self, exc: Any) -> None:
        """Raise ``LLMError`` for an HTTP error that a retry will not cure."""
        import openai

        status = exc.status_code
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            raise LLMError(
                f"the API rejected the key for {self.settings.base_url}: {_short(exc)}"
            ) from exc
        if isinstance(exc, openai.NotFoundError):
            raise LLMError(
                f"model {self.settings.model!r} or endpoint not found at "
                f"{self.settings.base_url}: {_short(exc)}"
            ) from exc
        if isinstance(exc, openai.BadRequestError) or status in (413, 422):
            raise LLMRequestError(f"the API refused the request: {_short(exc)}") from exc
        if status < 500 and status != 429:
            raise LLMError(f"the API answered {status}: {_short(exc)}") from exc

    def _delay(self, attempt: int, exc: Exception) -> float:
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                return min(float(retry_after), self.settings.backoff_max_seconds)
            except ValueError:
                pass
        base = self.settings.backoff_seconds * 2**attempt
        return float(min(self.settings.backoff_max_seconds, base * (0.5 + random.random())))

    def _finish(self, raw: dict[str, Any], schema: type[Any] | None, *, cached: bool) -> Completion:
        reasoning, answer = split_reasoning(raw["content"])
        reasoning = raw.get("reasoning") or reasoning
        parsed = None
        if schema is not None:
            value = extract_json(answer)
            if value is not None:
                try:
                    parsed = schema.model_validate(value)
                except Exception:  # noqa: BLE001 - pydantic's ValidationError and kin
                    parsed = None
        return Completion(
            content=answer,
            reasoning=reasoning,
            finish_reason=raw.get("finish_reason"),
            parsed=parsed,
            prompt_tokens=raw["prompt_tokens"],
            completion_tokens=raw["completion_tokens"],
            cached=cached,
        )

    def _cache_key(
        self,
        messages: Sequence[dict[str, str]],
        schema: type[Any] | None,
        temperature: float,
        sample: int,
        mode: str,
    ) -> str:
        payload = {
            "base_url": self.settings.base_url.rstrip("/"),
            "model": self.settings.model,
            "messages": list(messages),
            "temperature": temperature,
            "max_tokens": self.settings.max_tokens,
            "schema": schema.model_json_schema() if schema is not None else None,
            "sample": sample,
            # an answer is reused only under the structured-output mode that produced it
            "mode": mode,
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        if self.settings.cache_dir is None:
            return None
        return self.settings.cache_dir / key[:2] / f"{key}.json"

    def _read_cache(self, key: str) -> dict[str, Any] | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is simply fetched again
        return value if isinstance(value, dict) and "content" in value else None

    def _write_cache(self, key: str, raw: dict[str, Any]) -> None:
        path = self._cache_path(key)
        if path is not None:
            atomic_write_text(path, json.dumps(raw, ensure_ascii=False))

    def _add_cost(self, raw: dict[str, Any]) -> None:
        s = self.settings
        if s.price_input_per_million is None and s.price_output_per_million is None:
            return
        cost = raw["prompt_tokens"] * (s.price_input_per_million or 0) / 1e6
        cost += raw["completion_tokens"] * (s.price_output_per_million or 0) / 1e6
        self.usage.cost = (self.usage.cost or 0.0) + cost


def _response_format(mode: str, schema: type[Any]) -> dict[str, Any]:
    if mode == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
        }
    if mode == "json_object_schema":
        return {"type": "json_object", "schema": schema.model_json_schema()}
    return {"type": "json_object"}


def _about_response_format(error: Any, mode: str) -> bool:
    """Whether an error complains about structured output (not, say, a too-long prompt); a
    server that takes no schema beside json_object may name only the ``schema`` field."""
    messages, fields = _error_fields(error)
    text = " ".join(messages + fields).lower()
    if any(word in text for word in _FORMAT_WORDS):
        return True
    if mode != "json_object_schema":
        return False
    return any(re.search(r"\bschema\b", name.lower()) for name in fields) or any(
        _SCHEMA_FIELD.search(message) for message in messages
    )


def _error_fields(error: Any) -> tuple[list[str], list[str]]:
    """``(messages, field names)`` of an error body: ``error.message`` and FastAPI's
    ``detail[].msg``; ``error.param`` and ``detail[].loc``. Nothing else: a body may echo
    the request (pydantic's ``input``), whose response_format would read as a refusal."""
    if isinstance(error, str):
        return [error], []
    if not isinstance(error, dict):
        return ([str(error)] if error is not None else []), []
    if "error" in error:  # a whole body; the SDK hands over only what is under "error"
        return _error_fields(error["error"])
    messages = [str(error["message"])] if error.get("message") else []
    fields = [str(error["param"])] if error.get("param") else []
    detail = error.get("detail")
    if isinstance(detail, str):
        messages.append(detail)
    for problem in detail if isinstance(detail, list) else []:
        if not isinstance(problem, dict):
            messages.append(str(problem))
            continue
        if problem.get("msg"):
            messages.append(str(problem["msg"]))
        loc = problem.get("loc")
        if isinstance(loc, (list, tuple)):
            fields.append(".".join(str(part) for part in loc))
    return messages, fields


def _error_summary(error: Any) -> str:
    messages, fields = _error_fields(error)
    text = " ".join(messages + [f"({name})" for name in fields])
    return _short_text(text or json.dumps(error, default=str))


def _body_error(response: Any) -> Any:
    """The error of a 200 answer whose body is an error rather than a completion, as sent
    (a dict or a string), or ``None``."""
    if getattr(response, "choices", None):
        return None
    error = getattr(response, "error", None)
    if error is None and isinstance(getattr(response, "model_extra", None), dict):
        error = response.model_extra.get("error")
    return error


def _raw_answer(response: Any) -> dict[str, Any]:
    choices = getattr(response, "choices", None)
    if not choices:
        raise LLMError("the API answered without any choices")
    choice = choices[0]
    message = choice.message
    usage = getattr(response, "usage", None)
    return {
        "content": message.content or "",
        # DeepSeek's reasoner returns its thinking beside the answer, not inside <think>
        "reasoning": getattr(message, "reasoning_content", None),
        "finish_reason": choice.finish_reason,
        "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
        "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
    }


def _short(exc: BaseException) -> str:
    return _short_text(str(exc)) or type(exc).__name__


def _short_text(text: str) -> str:
    return " ".join(text.split())[:300]


def settings_dict(settings: LLMSettings) -> dict[str, Any]:
    """The settings without the key, for logs and metadata."""
    values = asdict(settings)
    values.pop("api_key", None)
    values["cache_dir"] = str(settings.cache_dir) if settings.cache_dir else None
    return values

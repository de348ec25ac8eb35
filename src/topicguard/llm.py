"""One client for any OpenAI-compatible chat API (DeepSeek, OpenAI, Fireworks, vLLM,
llama.cpp server, Ollama), built on the official ``openai`` SDK.

What long, paid, rate-limited runs need: bounded concurrency; retries with exponential
backoff and jitter on 429, 5xx, timeouts and dropped connections, honouring ``Retry-After``;
structured output (a JSON schema where the server supports it, else ``json_object``, else
the first valid JSON object found in free text or a fenced block); reasoning models'
``<think>`` text kept apart from the answer; an on-disk cache keyed by endpoint, model,
messages and sampling parameters, so a rerun or a resumed run pays only for what is missing;
token usage and cost summed over the run.

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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from topicguard._exceptions import LLMError
from topicguard._io import atomic_write_text

__all__ = [
    "Completion",
    "LLMClient",
    "LLMSettings",
    "Usage",
    "extract_json",
    "resolve_api_key",
    "split_reasoning",
]

logger = logging.getLogger(__name__)

KEY_VARIABLES = ("TOPICGUARD_API_KEY", "OPENAI_API_KEY")
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_MODES = ("json_schema", "json_object", "text")


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
    cache_dir: Path | None = Path(".topicguard-cache")
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


class LLMClient:
    """Async chat client with retries, structured output, cache and usage accounting."""

    def __init__(self, settings: LLMSettings) -> None:
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
        self._client = AsyncOpenAI(
            api_key=key or "not-needed",
            base_url=settings.base_url,
            timeout=settings.timeout,
            max_retries=0,
        )
        self._mode = _MODES[0]
        self._semaphore = asyncio.Semaphore(max(1, settings.concurrency))
        self.usage = Usage()

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
        key = self._cache_key(messages, schema, temperature, sample)
        cached = self._read_cache(key)
        if cached is not None:
            self.usage.calls += 1
            self.usage.cached += 1
            return self._finish(cached, schema, cached=True)
        async with self._semaphore:
            raw = await self._call_with_retries(list(messages), schema, temperature)
        self._write_cache(key, raw)
        self.usage.calls += 1
        self.usage.prompt_tokens += raw["prompt_tokens"]
        self.usage.completion_tokens += raw["completion_tokens"]
        self._add_cost(raw)
        return self._finish(raw, schema, cached=False)

    async def close(self) -> None:
        await self._client.close()

    # -- internals -------------------------------------------------------------------------

    async def _call_with_retries(
        self, messages: list[dict[str, str]], schema: type[Any] | None, temperature: float
    ) -> dict[str, Any]:
        import openai

        attempt = 0
        while True:
            kwargs: dict[str, Any] = {
                "model": self.settings.model,
                "messages": messages,
                "temperature": temperature,
            }
            if self.settings.max_tokens:
                kwargs["max_tokens"] = self.settings.max_tokens
            if schema is not None and self._mode != "text":
                kwargs["response_format"] = _response_format(self._mode, schema)
            try:
                response = await self._client.chat.completions.create(**kwargs)
                return _raw_answer(response)
            except openai.BadRequestError as exc:
                sent = kwargs.get("response_format", {}).get("type")
                if sent is not None and _about_response_format(exc):
                    # the server does not take this mode: step down from the mode this request
                    # used (concurrent requests may have stepped down already)
                    fallback = _MODES[_MODES.index(sent) + 1]
                    if _MODES.index(fallback) > _MODES.index(self._mode):
                        self._mode = fallback
                        logger.info(
                            "%s: structured output falls back to %s", self.settings.model, fallback
                        )
                    continue
                raise LLMError(f"the API refused the request: {_short(exc)}") from exc
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise LLMError(
                    f"the API rejected the key for {self.settings.base_url}: {_short(exc)}"
                ) from exc
            except openai.NotFoundError as exc:
                raise LLMError(
                    f"model {self.settings.model!r} or endpoint not found at "
                    f"{self.settings.base_url}: {_short(exc)}"
                ) from exc
            except (
                openai.RateLimitError,
                openai.InternalServerError,
                openai.APIStatusError,
                openai.APITimeoutError,
                openai.APIConnectionError,
            ) as exc:
                status = getattr(exc, "status_code", None)
                if (
                    isinstance(exc, openai.APIStatusError)
                    and status is not None
                    and status < 500
                    and status != 429
                ):
                    raise LLMError(f"the API answered {status}: {_short(exc)}") from exc
                if attempt >= self.settings.max_retries:
                    self.usage.failed += 1
                    raise LLMError(
                        f"{self.settings.base_url} still failing after "
                        f"{attempt + 1} attempts: {_short(exc)}"
                    ) from exc
                delay = self._delay(attempt, exc)
                attempt += 1
                self.usage.retries += 1
                logger.debug("retry %d in %.1f s after %s", attempt, delay, type(exc).__name__)
                await asyncio.sleep(delay)

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
    ) -> str:
        payload = {
            "base_url": self.settings.base_url.rstrip("/"),
            "model": self.settings.model,
            "messages": list(messages),
            "temperature": temperature,
            "max_tokens": self.settings.max_tokens,
            "schema": schema.model_json_schema() if schema is not None else None,
            "sample": sample,
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
    return {"type": "json_object"}


def _about_response_format(exc: Exception) -> bool:
    """Whether a 400 complains about structured output (not, say, a too-long prompt)."""
    text = str(exc).lower()
    words = ("response_format", "json_schema", "json_object", "response format", "structured")
    return any(word in text for word in words)


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
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def settings_dict(settings: LLMSettings) -> dict[str, Any]:
    """The settings without the key, for logs and metadata."""
    values = asdict(settings)
    values.pop("api_key", None)
    values["cache_dir"] = str(settings.cache_dir) if settings.cache_dir else None
    return values

"""Conversations: the user turns of an OpenAI message list, and labelled conversation files.

An OpenAI message list is ``[{"role": "system"|"user"|"assistant"|"tool", "content": ...}]``
where ``content`` is a string, a list of parts (``{"type": "text", "text": "…"}``; image and
audio parts carry no text and are skipped) or ``None`` (an assistant message that only calls
tools). The guard judges user turns only: :func:`user_texts` picks them out.

A conversation file is JSON Lines, one conversation per line::

    {"id": "c1", "lang": "en", "turns": [
        {"role": "user", "content": "where is my parcel SB1234567890", "label": true},
        {"role": "assistant", "content": "It is out for delivery today."},
        {"role": "user", "content": "and tomorrow?", "label": true, "category": "follow_up"}]}

Every user turn carries a label (true: on topic, the guard should let it through); other
turns carry none. ``id``, ``lang`` and a turn's ``category`` are optional. This module is the
one reader of that format; ``topicguard evaluate`` tells it from a message dataset by the
``turns`` key of its first line.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from topicguard._exceptions import DataError
from topicguard.data import parse_label
from topicguard.sentences import length

if TYPE_CHECKING:
    from topicguard.verdict import Verdict


__all__ = [
    "CONTEXT_SCORE_FLOOR",
    "CONTEXT_TURNS",
    "Classifier",
    "FOLLOW_UP_MAX_CJK_CHARS",
    "FOLLOW_UP_MAX_WORDS",
    "Conversation",
    "Turn",
    "classify_conversations",
    "is_conversation_file",
    "is_follow_up",
    "message_text",
    "read_conversations",
    "user_texts",
]


class Classifier(Protocol):
    """What judging a conversation needs of a guard: verdicts on single texts."""

    def classify(
        self, texts: Sequence[str], *, batch_size: int = 64, by_sentence: bool = True
    ) -> list[Verdict]: ...


ROLES = ("system", "developer", "user", "assistant", "tool", "function")

# A follow-up is short: at most this many words ("and to Canada?", "yes the second one") ...
FOLLOW_UP_MAX_WORDS = 6
# ... or this many Chinese or Japanese characters ("那明天呢？"; a Chinese word averages about
# 1.5 characters), or a mix weighed by both.
FOLLOW_UP_MAX_CJK_CHARS = 9
# A follow-up whose own score is below this is confidently off topic ("tell me a joke",
# "ignore your rules"): no earlier turn lets it through, whatever the two read together say.
# Read together, an on-topic turn can outweigh what follows it, so this floor is what keeps
# a short injection out. Measured on the bundled conversations (docs/conversations.md):
# such requests score 0.015-0.03 alone, while genuine follow-ups start near 0.02.
CONTEXT_SCORE_FLOOR = 0.03
# User turns the rule reads, the latest included: an allowed turn lends its context to at
# most the two short follow-ups after it.
CONTEXT_TURNS = 3
_JOINER = "\n"


@dataclass(frozen=True)
class Turn:
    """One message of a labelled conversation; ``label`` only on user turns."""

    role: str
    content: str
    label: bool | None = None
    category: str | None = None


@dataclass(frozen=True)
class Conversation:
    """A labelled conversation from a conversation file."""

    id: str
    turns: tuple[Turn, ...]
    lang: str | None = None

    def messages(self, end: int | None = None) -> list[dict[str, str]]:
        """The turns before index ``end`` (all by default) as an OpenAI message list."""
        return [{"role": t.role, "content": t.content} for t in self.turns[:end]]

    def user_turns(self) -> list[int]:
        """Indices of the user turns, in order."""
        return [i for i, t in enumerate(self.turns) if t.role == "user"]


def message_text(message: Any, position: int) -> str | None:
    """The text of one message: its string content, or its text parts joined by a newline;
    None when it has no text. ``position`` (1-based) names the message in errors."""
    if not isinstance(message, dict):
        raise DataError(f"message {position} is not an object with a role and a content")
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise DataError(f"message {position}: a text part has no string 'text'")
                parts.append(text)
        return "\n".join(parts) if parts else None
    raise DataError(f"message {position}: content must be a string or a list of parts")


def user_texts(messages: Sequence[Any]) -> list[str]:
    """The non-empty texts of the user messages, in order. A conversation with none (or an
    empty list) raises :class:`DataError`: there is nothing to judge."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise DataError("messages must be a list of {'role': ..., 'content': ...} objects")
    texts: list[str] = []
    last_user = 0
    for position, message in enumerate(messages, start=1):
        text = message_text(message, position)
        role = message.get("role")
        if not isinstance(role, str):
            raise DataError(f"message {position} has no role")
        if role != "user":
            continue
        last_user = position
        if text is not None and text.strip():
            texts.append(text)
        else:
            texts.append("")
    if not last_user:
        raise DataError("the conversation has no user message: nothing to judge")
    if not texts[-1].strip():
        raise DataError(f"the latest user message (message {last_user}) has no text to judge")
    return [t for t in texts if t.strip()]


def is_follow_up(text: str) -> bool:
    """Whether ``text`` is short enough to be a follow-up that leans on the turn before it:
    its words count against ``FOLLOW_UP_MAX_WORDS`` and its Chinese or Japanese characters
    against ``FOLLOW_UP_MAX_CJK_CHARS``, the two shares adding up to at most one."""
    words, cjk = length(text)
    return words / FOLLOW_UP_MAX_WORDS + cjk / FOLLOW_UP_MAX_CJK_CHARS <= 1


def classify_conversations(
    guard: Classifier, conversations: Sequence[Sequence[Any]], *, batch_size: int = 64
) -> list[Verdict]:
    """The verdict on each conversation's latest user message, in the context of the user
    turns before it (the rule of :meth:`TopicGuard.classify_conversation`).

    The latest messages are judged first, in one batch: most are allowed on their own and
    cost nothing more. For a blocked short follow-up, the up to ``CONTEXT_TURNS - 1`` user
    turns before it are judged on their own too, then walked oldest first: an allowed turn
    becomes the *anchor*; a blocked short turn that is not confidently off topic is read
    together with the anchor, and when that is allowed it joins the anchor; any other turn
    drops it. The latest message is allowed with context when it joins an anchor.
    """
    users: list[list[str]] = []
    for number, messages in enumerate(conversations, start=1):
        try:
            users.append(user_texts(messages)[-CONTEXT_TURNS:])
        except DataError as exc:
            where = f"conversation {number}: " if len(conversations) > 1 else ""
            raise DataError(f"{where}{exc}") from None
    results = guard.classify([turns[-1] for turns in users], batch_size=batch_size)
    pending = [
        i
        for i, verdict in enumerate(results)
        if len(users[i]) > 1 and not verdict.allowed and _may_follow(users[i][-1], verdict)
    ]
    if not pending:
        return results
    earlier = [(i, j) for i in pending for j in range(len(users[i]) - 1)]
    alone = guard.classify([users[i][j] for i, j in earlier], batch_size=batch_size)
    verdicts = dict(zip(earlier, alone, strict=True))
    verdicts.update({(i, len(users[i]) - 1): results[i] for i in pending})
    anchors: dict[int, str | None] = dict.fromkeys(pending)
    for step in range(CONTEXT_TURNS):
        joints: list[tuple[int, str]] = []
        for i in pending:
            if step >= len(users[i]):
                continue
            text, verdict = users[i][step], verdicts[(i, step)]
            anchor = anchors[i]
            if verdict.allowed:
                anchors[i] = text
            elif anchor is not None and _may_follow(text, verdict):
                joints.append((i, anchor + _JOINER + text))
            else:
                anchors[i] = None
        if not joints:
            continue
        # each part of a joint was judged already; together they are one message, not a
        # message of sentences to check one by one
        together = guard.classify(
            [joint for _, joint in joints], batch_size=batch_size, by_sentence=False
        )
        for (i, joint), verdict in zip(joints, together, strict=True):
            anchors[i] = joint if verdict.allowed else None
            if verdict.allowed and step == len(users[i]) - 1:
                results[i] = dataclasses.replace(
                    results[i],
                    label=verdict.label,
                    score=verdict.score,
                    allowed=True,
                    threshold=verdict.threshold,
                    context=True,
                )
    return results


def _may_follow(text: str, verdict: Verdict) -> bool:
    """A blocked turn that an allowed turn before it may rescue."""
    return verdict.score >= CONTEXT_SCORE_FLOOR and is_follow_up(text)


def is_conversation_file(path: str | Path) -> bool:
    """Whether ``path`` is a JSON Lines file whose first row is a conversation (has ``turns``)."""
    path = Path(path)
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return False
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    return isinstance(row, dict) and "turns" in row
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return False


def read_conversations(path: str | Path) -> list[Conversation]:
    """Read a conversation file; any malformed line raises :class:`DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    conversations: list[Conversation] = []
    seen: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg})") from exc
        conversation = _conversation(row, where, default_id=str(number))
        if conversation.id in seen:
            raise DataError(
                f"{where}: id {conversation.id!r} is also on line {seen[conversation.id]}"
            )
        seen[conversation.id] = number
        conversations.append(conversation)
    if not conversations:
        raise DataError(f"{path}: no conversations")
    return conversations


def _conversation(row: Any, where: str, *, default_id: str) -> Conversation:
    if not isinstance(row, dict):
        raise DataError(f"{where}: each line must be a JSON object with 'turns'")
    raw_turns = row.get("turns")
    if not isinstance(raw_turns, list) or not raw_turns:
        raise DataError(f"{where}: 'turns' must be a non-empty list of messages")
    turns = tuple(_turn(turn, f"{where}: turn {i}") for i, turn in enumerate(raw_turns, 1))
    if not any(t.role == "user" for t in turns):
        raise DataError(f"{where}: the conversation has no user turn")
    lang = row.get("lang")
    if lang is not None and not isinstance(lang, str):
        raise DataError(f"{where}: 'lang' must be a string such as 'en'")
    ident = row.get("id", default_id)
    if not isinstance(ident, (str, int)) or isinstance(ident, bool):
        raise DataError(f"{where}: 'id' must be a string")
    return Conversation(id=str(ident), turns=turns, lang=lang or None)


def _turn(raw: Any, where: str) -> Turn:
    if not isinstance(raw, dict):
        raise DataError(f"{where} is not an object with a role and a content")
    role = raw.get("role")
    if role not in ROLES:
        raise DataError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    content = raw.get("content")
    if not isinstance(content, str):
        raise DataError(f"{where}: 'content' must be a string")
    category = raw.get("category")
    if category is not None and not isinstance(category, str):
        raise DataError(f"{where}: 'category' must be a string")
    if role != "user":
        if "label" in raw:
            raise DataError(f"{where}: only user turns carry a label ({role} turn has one)")
        return Turn(role=role, content=content, category=category)
    if not content.strip():
        raise DataError(f"{where}: the user turn is empty")
    try:
        label = parse_label(raw.get("label"))
    except ValueError:
        raise DataError(
            f"{where}: label {raw.get('label')!r} is not true/false, 1/0 or yes/no"
        ) from None
    if label is None:
        raise DataError(f"{where}: the user turn has no label (true: on topic, false: blocked)")
    return Turn(role=role, content=content, label=label, category=category)

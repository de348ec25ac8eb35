"""The sentences of a message that the guard also judges on their own.

A request the guard would block ("write me a poem about the sea") can hide behind a genuine
parcel question in the same message: judged as a whole, the parcel words often carry it
through, though with less confidence than a plain parcel question. So a message of several
sentences that the guard allows without being sure of it (:class:`SentenceCheck`) is judged
sentence by sentence too (:class:`topicguard.runtime.TopicGuard`), and a sentence that is
confidently off topic on its own blocks the message. Messages allowed with confidence, and
messages already blocked, pay nothing. Short pieces (a greeting, "thanks!", "asap") are never
judged alone: they mean nothing without the rest.

Pure text work, no model: :func:`sentences` says which pieces of a text count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SentenceCheck", "length", "sentences"]

# a sentence ends at ! ? ; or a full stop that does not follow a digit ("am 8. Dezember"),
# followed by a space; at the Chinese and Japanese marks (no space after them); and at a
# line break
_BOUNDARY = re.compile(r"(?<=[!?;])\s+|(?<=\D\.)\s+|(?<=[。！？；])\s*|\s*\n\s*")
_WORD = re.compile(r"\w+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class SentenceCheck:
    """When a sentence blocks its message.

    A message allowed with a calibrated score below ``unsure_below`` is judged sentence by
    sentence; a sentence scoring under ``floor`` on its own blocks it (the message takes the
    sentence's score). ``min_words``: sentences of fewer words (Chinese and Japanese: twice
    as many characters) are not judged alone; ``max_sentences``: at most this many sentences
    of one message are judged (the first and the last half of them); a longer text is still
    judged whole, in windows.

    The values were chosen on the bundled data's validation rows (docs/concepts.md,
    "Messages of several sentences")."""

    floor: float = 0.1
    unsure_below: float = 0.95
    min_words: int = 3
    max_sentences: int = 32


def sentences(text: str, check: SentenceCheck) -> list[str]:
    """The sentences of ``text`` to judge on their own: none when it holds only one (the
    whole message is that sentence), else each one long enough, at most
    ``check.max_sentences``.

    >>> sentences("Where is my parcel? Also write a poem about the sea.", SentenceCheck())
    ['Where is my parcel?', 'Also write a poem about the sea.']
    >>> sentences("Hi! Where is my parcel SB123?", SentenceCheck())
    ['Where is my parcel SB123?']
    """
    pieces = [p for p in _BOUNDARY.split(text.strip()) if p and not p.isspace()]
    if len(pieces) < 2:
        return []
    kept = [p for p in pieces if _long_enough(p, check.min_words)]
    if len(kept) > check.max_sentences:
        half = check.max_sentences // 2
        kept = kept[:half] + kept[len(kept) - (check.max_sentences - half) :]
    return kept


def length(text: str) -> tuple[int, int]:
    """How long ``text`` reads: its words outside Chinese and Japanese script, and its Chinese
    and Japanese characters (which have no spaces to count words by).

    >>> length("where is 我的包裹")
    (2, 4)
    """
    return len(_WORD.findall(_CJK.sub(" ", text))), len(_CJK.findall(text))


def _long_enough(piece: str, min_words: int) -> bool:
    words, cjk = length(piece)
    return cjk >= 2 * min_words if cjk else words >= min_words

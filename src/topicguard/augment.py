"""Training-time augmentation: new training rows made from the training rows themselves.

Real messages are messier than a dataset: people put two things in one message and type
fast. Three kinds of rows, each marked in ``source`` (``"augment:<kind>"``) so that they can
be told apart and counted (:func:`count_augmented`):

- ``mixed``: an on-topic row joined with a blocked request of the same language (a
  hijack or jailbreak, misuse, or anything a general-purpose assistant would do: every
  blocked category but :data:`MIX_EXCLUDED`) is blocked: a blocked request stays blocked
  whatever is joined to it.
- ``social``: any row joined with harmless social text (a greeting, thanks, an apology, a
  line about the sender's day: :data:`SOCIAL_TEXTS`) keeps its label. Blocked rows get social
  text too, so that a greeting teaches the guard nothing about the verdict.
- ``noise``: typing noise, label unchanged. Latin script: keyboard-neighbour typos on the
  language's layout (QWERTZ for German, AZERTY for French), dropped, doubled and swapped
  letters, no capitals, no punctuation, no accents, terse fragments. Chinese: full-width and
  half-width punctuation swapped, spaces inserted, no punctuation, traditional characters
  (with the optional OpenCC tables: ``pip install 'topicguard[augment]'``).

Pure Python and seeded: the same rows, seed and ratio give the same new rows. Pass training
rows only; :mod:`topicguard.training` calls :func:`augment` after the validation split.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import re
import unicodedata
from collections.abc import Callable, Collection, Sequence

from topicguard._exceptions import DataError
from topicguard._social import SOCIAL_TEXTS
from topicguard.data import Example

__all__ = [
    "AUGMENT_SOURCE",
    "KINDS",
    "MIX_EXCLUDED",
    "SHARES",
    "SOCIAL_TEXTS",
    "augment",
    "count_augmented",
    "is_augmented",
]

logger = logging.getLogger(__name__)

AUGMENT_SOURCE = "augment"
KINDS = ("mixed", "social", "noise")
# the share of each kind in the rows made (half mixed messages, half typing noise)
SHARES = {"mixed": 0.3, "social": 0.2, "noise": 0.5}
# A blocked request makes a message blocked whatever else it asks: hijacks and jailbreaks,
# misuse and harmful requests, and the bot used as a general assistant (recipes, money,
# travel, code, trivia...; measured: half of such requests behind a parcel sentence got
# through a guard trained without these rows). Questions about competitors or adjacent
# domains are left out: next to a real request they are a judgement call, not a rule.
# Rows without a category are taken by their label.
MIX_EXCLUDED = frozenset({"competitors", "adjacent_domain"})
# a joined message must fit the model's window (128 tokens by default) whole, or a blocked
# half could be cut off and leave a blocked label on an on-topic text
MAX_JOINED_CHARS = {"zh": 120}
DEFAULT_MAX_JOINED_CHARS = 320
ATTEMPTS = 5  # tries per row wanted before a kind gives up on a language

_LAYOUTS = {
    "qwerty": ("qwertyuiop", "asdfghjkl", "zxcvbnm"),
    "qwerty-es": ("qwertyuiop", "asdfghjklñ", "zxcvbnm"),
    "qwertz": ("qwertzuiopü", "asdfghjklöä", "yxcvbnm"),
    "azerty": ("azertyuiop", "qsdfghjklm", "wxcvbn"),
}
_LAYOUT_OF = {"de": "qwertz", "fr": "azerty", "es": "qwerty-es"}  # any other: qwerty
# words a hurried writer leaves out (no negations: a fragment keeps its meaning)
_FILLER = {
    "en": "a an the is are am do does can could would you please i i'm me just so really",
    "es": "el la los las un una unos unas es me yo puedes podrías podría favor hola",
    "de": "der die das den dem ein eine einen ist bin ich mir mich bitte können könnten sie mal",
    "fr": "le la les un une des est je me moi vous pouvez pourriez svp bonjour",
}
_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "Ae", "Ö": "Oe"})
_FULL_TO_HALF = str.maketrans("，。？！：；（）“”", ',.?!:;()""')
_HALF_TO_FULL = str.maketrans(",.?!:;()", "，。？！：；（）")
_TERMINAL = tuple(".?!…。？！～~")
_WORD = re.compile(r"\b[^\W\d_]{3,}\b")
_HAN = re.compile(r"[\u4e00-\u9fff]")


def augment(
    rows: Sequence[Example],
    *,
    seed: int,
    ratio: float = 0.15,
    languages: Collection[str] | None = None,
) -> list[Example]:
    """New rows made from ``rows`` (training rows only), at most ``ratio`` of their number
    in each language, shared among the kinds as :data:`SHARES` says; rows already made by
    augmentation are not used again. ``languages`` limits it to rows of those languages
    (a row without a language counts as English). Where a kind lacks source rows (no
    blocked request of a language to mix with), fewer rows are made and one line is logged.
    """
    if not 0 <= ratio <= 1:
        raise DataError(f"augment ratio must be in [0, 1], got {ratio}")
    groups: dict[str, list[Example]] = {}
    for row in rows:
        if is_augmented(row) or (languages is not None and (row.lang or "en") not in languages):
            continue
        groups.setdefault(row.lang or "", []).append(row)
    seen = {row.text for row in rows}
    made: list[Example] = []
    missing: dict[str, list[str]] = {}  # kind -> languages that lacked source rows
    for key in sorted(groups):
        group = groups[key]
        rng = random.Random(f"{seed}:{key}")
        for kind, wanted in _budget(math.floor(ratio * len(group) + 1e-9)).items():
            new = _MAKERS[kind](group, wanted, rng, group[0].lang, seen)
            if len(new) < wanted:
                missing.setdefault(kind, []).append(key or "(no language)")
            made += new
    if missing:
        wanted_total = sum(math.floor(ratio * len(g) + 1e-9) for g in groups.values())
        reasons = {
            "mixed": "on-topic and blocked rows",
            "social": "social texts",
            "noise": "rows that noise changes",
        }
        logger.warning(
            "augmentation made %d of %d rows: too few %s",
            len(made),
            wanted_total,
            "; too few ".join(f"{reasons[k]} in {', '.join(v)}" for k, v in missing.items()),
        )
    return made


def is_augmented(row: Example) -> bool:
    """Whether ``row`` was made by :func:`augment`."""
    return (row.source or "").startswith(f"{AUGMENT_SOURCE}:")


def count_augmented(rows: Sequence[Example]) -> dict[str, int]:
    """How many of ``rows`` augmentation made, by kind (every kind, zeros included)."""
    counts = dict.fromkeys(KINDS, 0)
    for row in rows:
        if is_augmented(row):
            kind = (row.source or "").split(":", 1)[1]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def _budget(total: int) -> dict[str, int]:
    """``total`` rows shared among the kinds by :data:`SHARES` (largest remainders)."""
    exact = {kind: total * SHARES[kind] for kind in KINDS}
    counts = {kind: math.floor(value) for kind, value in exact.items()}
    by_remainder = sorted(KINDS, key=lambda k: (counts[k] - exact[k], -SHARES[k]))
    for kind in by_remainder[: total - sum(counts.values())]:
        counts[kind] += 1
    return counts


def _base(lang: str | None) -> str:
    return re.split(r"[-_]", lang or "en")[0].lower()


def _mixable(row: Example) -> bool:
    return not row.label and row.category not in MIX_EXCLUDED


def _mixed(
    group: list[Example], wanted: int, rng: random.Random, lang: str | None, seen: set[str]
) -> list[Example]:
    """On-topic rows joined with blocked requests: blocked."""
    on_topic = [row for row in group if row.label]
    blocked = [row for row in group if _mixable(row)]
    if not on_topic or not blocked:
        return []
    made: list[Example] = []
    for _ in range(wanted * ATTEMPTS):
        if len(made) == wanted:
            break
        allowed, request = rng.choice(on_topic), rng.choice(blocked)
        text = _join([allowed.text, request.text], lang, rng, seen)
        if text is not None:
            made.append(_made(text, False, request.category, lang, "mixed"))
    return made


def _social(
    group: list[Example], wanted: int, rng: random.Random, lang: str | None, seen: set[str]
) -> list[Example]:
    """Rows joined with a greeting, thanks or the like: their own label."""
    social = SOCIAL_TEXTS.get(_base(lang))
    if not social:
        return []
    made: list[Example] = []
    for _ in range(wanted * ATTEMPTS):
        if len(made) == wanted:
            break
        row = rng.choice(group)
        text = _join([row.text, rng.choice(social)], lang, rng, seen)
        if text is not None:
            made.append(_made(text, row.label, row.category, lang, "social"))
    return made


def _noise(
    group: list[Example], wanted: int, rng: random.Random, lang: str | None, seen: set[str]
) -> list[Example]:
    """Rows as a hurried writer would type them: their own label."""
    made: list[Example] = []
    for index in rng.sample(range(len(group)), len(group)):
        if len(made) == wanted:
            break
        row = group[index]
        text = _noisy(row.text, lang, rng).strip()
        if text and text != row.text.strip() and text not in seen:
            seen.add(text)
            made.append(_made(text, row.label, row.category, lang, "noise"))
    return made


_MAKERS = {"mixed": _mixed, "social": _social, "noise": _noise}


def _made(text: str, label: bool, category: str | None, lang: str | None, kind: str) -> Example:
    return Example(
        text=text, label=label, category=category, lang=lang, source=f"{AUGMENT_SOURCE}:{kind}"
    )


def _join(parts: list[str], lang: str | None, rng: random.Random, seen: set[str]) -> str | None:
    """The parts in either order with a joiner natural to the language; ``None`` when the
    message would be too long or already exists."""
    if rng.random() < 0.5:
        parts = parts[::-1]
    first, second = (part.strip() for part in parts)
    if len(first) + len(second) + 1 > MAX_JOINED_CHARS.get(_base(lang), DEFAULT_MAX_JOINED_CHARS):
        return None
    ends = first.endswith(_TERMINAL)
    if _base(lang) == "zh":
        joiner = rng.choice(("", " ", "\n") if ends else ("", " ", "，", "。", "\n"))
    else:
        joiner = rng.choice((" ", " ", "\n") if ends else (" ", "\n", ". "))
    text = first + joiner + second
    if text in seen:
        return None
    seen.add(text)
    return text


def _noisy(text: str, lang: str | None, rng: random.Random) -> str:
    """``text`` with one to three kinds of typing noise (one or two for Chinese)."""
    if _base(lang) == "zh":
        ops = [_swap_width, _insert_spaces, _no_punctuation]
        if _traditional_converter() is not None:
            ops.append(_traditional)
        count = rng.choice((1, 1, 2))
    else:
        ops = [_typo, _typo, _no_capitals, _no_punctuation, _no_accents, _terse]
        count = rng.choice((1, 2, 2, 3))
    for op in rng.sample(ops, count):
        text = op(text, lang, rng)
    return text


def _typo(text: str, lang: str | None, rng: random.Random) -> str:
    """One slip of the finger in a word of three letters or more: a neighbouring key, a
    dropped, doubled or swapped letter."""
    words = list(_WORD.finditer(text))
    if not words:
        return text
    word = rng.choice(words)
    i = rng.randrange(word.start(), word.end())
    slip = rng.choice(("neighbour", "drop", "double", "swap"))
    char = text[i]
    if slip == "neighbour":
        near = _neighbours(_LAYOUT_OF.get(_base(lang), "qwerty")).get(char.lower())
        if not near:
            return text
        key = rng.choice(near)
        return text[:i] + (key.upper() if char.isupper() else key) + text[i + 1 :]
    if slip == "drop":
        return text[:i] + text[i + 1 :]
    if slip == "double":
        return text[:i] + char + text[i:]
    if i + 1 >= word.end():
        i -= 1
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


@functools.cache
def _neighbours(layout: str) -> dict[str, str]:
    """Each key's neighbours on a staggered keyboard: left, right, and the two keys above
    and below that touch it."""
    rows = _LAYOUTS[layout]
    near: dict[str, str] = {}
    for r, row in enumerate(rows):
        for i, key in enumerate(row):
            found = [row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)]
            if r > 0:
                found += [rows[r - 1][j] for j in (i, i + 1) if j < len(rows[r - 1])]
            if r + 1 < len(rows):
                found += [rows[r + 1][j] for j in (i - 1, i) if 0 <= j < len(rows[r + 1])]
            near[key] = "".join(found)
    return near


def _no_capitals(text: str, lang: str | None, rng: random.Random) -> str:
    return text.lower()


def _no_punctuation(text: str, lang: str | None, rng: random.Random) -> str:
    """Without punctuation: "don't" as "dont", "SB-12" as "SB 12"; Chinese closes up."""
    text = re.sub(r"['’]", "", text)
    return " ".join(re.sub(r"[^\w\s]", " " if _base(lang) != "zh" else "", text).split())


def _no_accents(text: str, lang: str | None, rng: random.Random) -> str:
    """Typed without accents: é as e, ñ as n; German umlauts as ae, oe, ue."""
    if _base(lang) == "de":
        text = text.translate(_UMLAUTS)
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not _is_mark(c)))


def _is_mark(char: str) -> bool:
    return unicodedata.category(char) == "Mn"


def _terse(text: str, lang: str | None, rng: random.Random) -> str:
    """A fragment: a message of four words or more without its filler words (when two or
    more words remain)."""
    filler = set(_FILLER.get(_base(lang), "").split())
    words = text.split()
    kept = [w for w in words if w.lower().strip(",.?!¿¡") not in filler]
    return " ".join(kept) if len(kept) >= 2 and len(words) >= 4 else text


def _swap_width(text: str, lang: str | None, rng: random.Random) -> str:
    """Full-width punctuation typed half-width, or the other way round."""
    half = text.translate(_FULL_TO_HALF)
    return half if half != text else text.translate(_HALF_TO_FULL)


def _insert_spaces(text: str, lang: str | None, rng: random.Random) -> str:
    """A space or a few between Chinese characters, as some input methods leave them."""
    gaps = [m.end() for m in _HAN.finditer(text) if m.end() < len(text)]
    gaps = [g for g in gaps if _HAN.match(text[g])]
    most = max(1, min(3, len(gaps) // 5))  # about one space in five characters at most
    for gap in sorted(rng.sample(gaps, min(len(gaps), rng.randint(1, most))), reverse=True):
        text = text[:gap] + " " + text[gap:]
    return text


def _traditional(text: str, lang: str | None, rng: random.Random) -> str:
    convert = _traditional_converter()
    return convert(text) if convert else text


@functools.cache
def _traditional_converter() -> Callable[[str], str] | None:
    """Simplified to traditional characters with OpenCC's tables (the pure-Python
    ``opencc-python-reimplemented``, or OpenCC's own binding), or ``None`` without them."""
    try:
        from opencc import OpenCC
    except ImportError:
        logger.debug(
            "opencc is not installed: Chinese rows get no traditional-character noise "
            "(pip install 'topicguard[augment]')"
        )
        return None
    convert: Callable[[str], str] = OpenCC("s2t").convert
    return convert

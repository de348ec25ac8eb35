"""Which language a message is in, and whether a base model can read a language.

Detection uses ``py3langid`` (a naive-Bayes byte n-gram model shipped inside the package,
~0.25 ms per query on a slow 2-core machine). Short queries are hard to place among 97
languages ("close acct" reads as Galician), so a text counts as being in a language the guard
does not serve only when the detector is sure of it (probability ≥
``UNSUPPORTED_CONFIDENCE``, or ``UNSUPPORTED_RATIO`` times likelier than any of the guard's
languages: Cyrillic among en/zh/es/de/fr); otherwise it takes the likeliest of the guard's own
languages. Texts with no letters at all (emoji, numbers) are ``und`` (undetermined) and
served by the guard's fast model.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from topicguard._exceptions import ModelError

__all__ = ["UNDETERMINED", "LanguageDetector", "detectable_languages", "unknown_share"]

UNDETERMINED = "und"
UNSUPPORTED_CONFIDENCE = 0.9
UNSUPPORTED_RATIO = 20.0
UNREADABLE_SHARE = 0.3  # a base model that cannot read this share of a language's characters


@dataclass(frozen=True)
class Detection:
    lang: str
    supported: bool


@functools.lru_cache(maxsize=1)
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detectable_languages() -> list[str]:
    return sorted(_identifier().nb_classes)


class LanguageDetector:
    """Detects the language of texts, among all languages but leaning to ``languages``."""

    def __init__(self, languages: Sequence[str]) -> None:
        self.languages = list(dict.fromkeys(languages))
        known = set(detectable_languages())
        unknown = [lang for lang in self.languages if lang not in known]
        if unknown:
            raise ModelError(
                f"cannot detect language(s) {', '.join(unknown)}: use ISO 639-1 codes such as "
                "en, zh, es, de, fr"
            )

    def detect(self, text: str) -> Detection:
        if not any(unicodedata.category(ch).startswith("L") for ch in text):
            return Detection(UNDETERMINED, True)
        ranking = _identifier().rank(text)
        top, top_p = ranking[0]
        lang, p = next(((lang, p) for lang, p in ranking if lang in self.languages), (top, 0.0))
        if top != lang and (top_p >= UNSUPPORTED_CONFIDENCE or top_p >= UNSUPPORTED_RATIO * p):
            return Detection(str(top), False)
        return Detection(str(lang), True)

    def detect_all(self, texts: Sequence[str]) -> list[Detection]:
        return [self.detect(text) for text in texts]


def unknown_share(tokenizer: Any, texts: Sequence[str]) -> float:
    """Share of the texts' non-space characters that ``tokenizer`` turns into its unknown
    token: ~0 for a language it reads, most of them for a script it has no pieces for."""
    unk = getattr(tokenizer, "unk_token_id", None)
    total = unknown = 0
    if unk is None or not texts:
        return 0.0
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    for text, ids, offsets in zip(
        texts, encoded["input_ids"], encoded["offset_mapping"], strict=True
    ):
        total += sum(1 for ch in text if not ch.isspace())
        for token, (start, end) in zip(ids, offsets, strict=True):
            if token == unk:
                unknown += sum(1 for ch in text[start:end] if not ch.isspace())
    return unknown / total if total else 0.0

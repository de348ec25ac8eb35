"""``data coverage``: how many training rows speak to each topic of the spec, per language.

Rows carry a ``category`` (``tracking``, ``coding``, ...), the spec lists topics in prose. Each
category is mapped to one topic of its side (a category whose rows are mostly on topic to an
allowed topic, mostly off topic to a blocked one): the nearest by cosine similarity of
multilingual-e5-small embeddings (mean pooled, ``"query: "`` prefix), comparing each topic
with both the centroid of a sample of the category's rows and the category's name. Rows that
no category places (none given, a category with too few rows, or a row whose label disagrees
with its category's majority) are placed one by one: the nearest topic of their label's side.

A cell is one topic in one of the spec's languages; it is thin below ``min_rows`` rows.
Rows in languages the spec does not list are counted apart. A row without ``lang`` gets the
detected one (:mod:`topicguard.languages`).
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from topicguard._exceptions import DataError, ModelError, SpecError
from topicguard.data import Example
from topicguard.spec import GuardSpec

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_MIN_CATEGORY_ROWS",
    "DEFAULT_MIN_ROWS",
    "Cell",
    "Coverage",
    "Embedder",
    "TransformerEmbedder",
    "coverage",
]

logger = logging.getLogger(__name__)

# Texts in, one L2-normalised row per text out (numpy, shape (len(texts), dim)).
Embedder = Callable[[Sequence[str]], "np.ndarray"]

DEFAULT_EMBEDDING_MODEL = "multilingual-e5-small"
DEFAULT_MIN_ROWS = 30
DEFAULT_MIN_CATEGORY_ROWS = 5
E5_PREFIX = "query: "
CATEGORY_SAMPLE = 64  # rows per category whose centroid stands for it
# Share of the category's name in its similarity to a topic. On the bundled example the
# centroid alone sends most blocked categories to the jailbreak topic (centroids of short
# queries crowd together) and the name alone misplaces tracking and competitors; half and half
# places all 28 categories where a person would (education, half homework and half logistics
# courses, is a near tie).
NAME_WEIGHT = 0.5
_SEED = 0
OTHER = "other"  # languages the spec does not list, or none detected


@dataclass(frozen=True)
class Cell:
    """The rows that speak to one topic in one language."""

    topic: str
    side: str  # "allowed" or "blocked"
    lang: str
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "side": self.side, "lang": self.lang, "rows": self.rows}


@dataclass
class Coverage:
    """What :func:`coverage` found; ``to_dict`` is the ``--json`` output."""

    languages: list[str]
    min_rows: int
    cells: list[Cell]  # every topic in every language, in spec order
    n_rows: int
    placed_by_category: int
    placed_by_similarity: int
    has_category_column: bool
    category_topics: dict[str, str]  # category -> the topic it was mapped to
    other_languages: dict[str, int]  # rows in languages the spec does not list
    notes: list[str] = field(default_factory=list)

    @property
    def thin(self) -> list[Cell]:
        """Cells below ``min_rows``, fewest rows first."""
        thin = [c for c in self.cells if c.rows < self.min_rows]
        return sorted(thin, key=lambda c: (c.rows, c.side, c.topic, c.lang))

    def topic_totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for cell in self.cells:
            totals[cell.topic] = totals.get(cell.topic, 0) + cell.rows
        return totals

    def language_totals(self) -> dict[str, int]:
        totals = {lang: 0 for lang in self.languages}
        for cell in self.cells:
            totals[cell.lang] += cell.rows
        return totals

    def side_totals(self) -> dict[str, int]:
        totals = {"allowed": 0, "blocked": 0}
        for cell in self.cells:
            totals[cell.side] += cell.rows
        return totals

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows,
            "languages": self.languages,
            "min_rows": self.min_rows,
            "n_cells": len(self.cells),
            "n_thin": len(self.thin),
            "thin": [c.to_dict() for c in self.thin],
            "cells": [c.to_dict() for c in self.cells],
            "totals": {
                "by_topic": self.topic_totals(),
                "by_language": self.language_totals(),
                "by_side": self.side_totals(),
                "other_languages": self.other_languages,
            },
            "has_category_column": self.has_category_column,
            "placed_by_category": self.placed_by_category,
            "placed_by_similarity": self.placed_by_similarity,
            "category_topics": self.category_topics,
            "notes": self.notes,
        }


class TransformerEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings from a frozen encoder (by default
    multilingual-e5-small, rebuilt offline by :mod:`topicguard.e5`), in length-sorted batches."""

    def __init__(
        self,
        name_or_path: str = DEFAULT_EMBEDDING_MODEL,
        *,
        batch_size: int = 64,
        max_length: int = 128,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        from topicguard.models import quiet_transformers, resolve_base_model

        source = resolve_base_model(name_or_path)
        try:
            with quiet_transformers():
                self.tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
                self.model = AutoModel.from_pretrained(source, use_safetensors=True).eval()
        except Exception as exc:  # noqa: BLE001 - OSError, ValueError, safetensors' own errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot load embedding model {name_or_path!r}: {first}") from exc
        self.batch_size = batch_size
        self.max_length = max_length

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np
        import torch

        from topicguard._progress import progress_bar

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), int(self.model.config.hidden_size)), dtype=np.float32)
        bar = progress_bar(len(texts), "embedding", logger=logger, unit="text", leave=False)
        with bar, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
                bar.update(len(rows))
        return out


class _CachedEmbedder:
    """Embeds each distinct text once per run, with the e5 prefix."""

    def __init__(self, embed: Embedder) -> None:
        self._embed = embed
        self._cache: dict[str, Any] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new:
            logger.debug("embedding %d texts", len(new))
            vectors: Any = np.asarray(self._embed([E5_PREFIX + t for t in new]), dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(new):
                raise ModelError(
                    f"the embedding function returned {vectors.shape[0]} rows for {len(new)} texts"
                )
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms > 0, norms, np.float32(1.0))
            self._cache.update(zip(new, vectors, strict=True))
        return np.stack([self._cache[t] for t in texts])


def coverage(
    spec: GuardSpec,
    examples: Sequence[Example],
    *,
    embed: Embedder | None = None,
    min_rows: int = DEFAULT_MIN_ROWS,
    min_category_rows: int = DEFAULT_MIN_CATEGORY_ROWS,
) -> Coverage:
    """Count the rows that speak to each topic of ``spec`` in each of its languages.

    ``embed`` maps texts to L2-normalised vectors (default: a :class:`TransformerEmbedder`
    of multilingual-e5-small, loaded only when called for).
    """
    allowed, blocked = list(spec.allowed_topics), list(spec.blocked_topics)
    for name, topics in (("allowed_topics", allowed), ("blocked_topics", blocked)):
        if not topics:
            raise SpecError(f"the spec's {name} is empty: list at least one topic to cover")
    if not examples:
        raise DataError("no rows to count: the data is empty")
    if min_rows < 1 or min_category_rows < 1:
        raise DataError("min_rows and min_category_rows must be at least 1")
    cached = _CachedEmbedder(embed if embed is not None else TransformerEmbedder())
    sides = {True: allowed, False: blocked}
    vectors = cached(allowed + blocked)
    topic_vectors = {True: vectors[: len(allowed)], False: vectors[len(allowed) :]}

    notes: list[str] = []
    has_category = any(e.category for e in examples)
    if not has_category:
        notes.append("the data has no category column: every row was placed by similarity")
    topic_of, category_topics, unplaced = _place_by_category(
        examples, sides, topic_vectors, cached, min_category_rows, notes
    )
    topic_of.update(_place_by_similarity(examples, unplaced, sides, topic_vectors, cached))

    languages = list(dict.fromkeys(_code(lang) or lang for lang in spec.languages))
    langs = _languages(languages, examples, notes)
    counts: Counter[tuple[str, str]] = Counter()
    other: Counter[str] = Counter()
    for row, lang in enumerate(langs):
        if lang in languages:
            counts[(topic_of[row], lang)] += 1
        else:
            other[lang] += 1
    cells = [
        Cell(topic, side, lang, counts[(topic, lang)])
        for side, topics in (("allowed", allowed), ("blocked", blocked))
        for topic in topics
        for lang in languages
    ]
    return Coverage(
        languages=languages,
        min_rows=min_rows,
        cells=cells,
        n_rows=len(examples),
        placed_by_category=len(examples) - len(unplaced),
        placed_by_similarity=len(unplaced),
        has_category_column=has_category,
        category_topics=category_topics,
        other_languages=dict(other.most_common()),
        notes=notes,
    )


def _place_by_category(
    examples: Sequence[Example],
    sides: dict[bool, list[str]],
    topic_vectors: dict[bool, Any],
    embed: _CachedEmbedder,
    min_category_rows: int,
    notes: list[str],
) -> tuple[dict[int, str], dict[str, str], list[int]]:
    """Each usable category's topic; the rows it places; the rows left to place one by one."""
    members: dict[str, list[int]] = defaultdict(list)
    unplaced: list[int] = []
    for row, example in enumerate(examples):
        if example.category:
            members[example.category].append(row)
        else:
            unplaced.append(row)
    if unplaced and members:
        notes.append(f"{len(unplaced)} rows without a category were placed by similarity")
    small = sorted(c for c, rows in members.items() if len(rows) < min_category_rows)
    if small:
        unplaced.extend(r for c in small for r in members[c])
        notes.append(
            f"{len(small)} categories with fewer than {min_category_rows} rows were placed "
            f"row by row: {', '.join(small[:10])}{' ...' if len(small) > 10 else ''}"
        )
    rng = random.Random(_SEED)
    usable: dict[str, tuple[bool, list[int], list[int]]] = {}
    minority = 0
    for category, rows in sorted(members.items()):
        if category in small:
            continue
        label = 2 * sum(examples[r].label for r in rows) >= len(rows)
        majority = [r for r in rows if examples[r].label is label]
        against = [r for r in rows if examples[r].label is not label]
        unplaced.extend(against)
        minority += len(against)
        sample = rng.sample(majority, min(CATEGORY_SAMPLE, len(majority)))
        usable[category] = (label, majority, sample)
    if minority:
        notes.append(
            f"{minority} rows labelled against their category's majority were placed by "
            "similarity on their label's side"
        )
    # one call for every category's sample and name, so the encoder sees full batches
    embed(
        [examples[r].text for _, _, sample in usable.values() for r in sample]
        + [_category_name(c) for c in usable]
    )
    topic_of: dict[int, str] = {}
    category_topics: dict[str, str] = {}
    for category, (label, majority, sample) in usable.items():
        centroid = embed([examples[r].text for r in sample]).mean(axis=0)
        centroid /= max(float((centroid**2).sum() ** 0.5), 1e-12)
        name = embed([_category_name(category)])[0]
        vectors = topic_vectors[label]
        similarity = (1 - NAME_WEIGHT) * (vectors @ centroid) + NAME_WEIGHT * (vectors @ name)
        topic = sides[label][int(similarity.argmax())]
        category_topics[category] = topic
        topic_of.update((r, topic) for r in majority)
    return topic_of, category_topics, unplaced


def _place_by_similarity(
    examples: Sequence[Example],
    rows: list[int],
    sides: dict[bool, list[str]],
    topic_vectors: dict[bool, Any],
    embed: _CachedEmbedder,
) -> dict[int, str]:
    """The nearest topic of its label's side for each of ``rows``."""
    if not rows:
        return {}
    vectors = embed([examples[r].text for r in rows])
    topic_of: dict[int, str] = {}
    for i, row in enumerate(rows):
        label = examples[row].label
        topic_of[row] = sides[label][int((topic_vectors[label] @ vectors[i]).argmax())]
    return topic_of


def _category_name(category: str) -> str:
    return " ".join(category.replace("_", " ").replace("-", " ").split())


def _languages(languages: list[str], examples: Sequence[Example], notes: list[str]) -> list[str]:
    """Each row's language code (``zh-CN`` counts as ``zh``); detected where a row has none."""
    langs = [_code(e.lang) for e in examples]
    missing = [i for i, lang in enumerate(langs) if lang is None]
    if missing:
        from topicguard.languages import LanguageDetector

        detector = LanguageDetector(languages)
        for i in missing:
            langs[i] = detector.detect(examples[i].text).lang
        notes.append(f"{len(missing)} rows without a lang column value: language detected")
    return [lang or OTHER for lang in langs]


def _code(lang: str | None) -> str | None:
    if not lang:
        return None
    return lang.strip().lower().replace("_", "-").split("-")[0] or None

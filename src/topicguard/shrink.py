"""Making an encoder smaller before it is fine-tuned: fewer layers, a smaller vocabulary.

Both cuts are for the multilingual model, whose 12 layers are most of a guard's training
time and whose 250k-token vocabulary (XLM-R's, for ~100 languages) is most of its size:

- :func:`drop_layers` keeps the lower ``keep`` encoder layers (the upper ones of a pretrained
  encoder are the most task-specific and the least missed once the model is fine-tuned);
- :func:`trim_vocabulary` keeps the tokens a guard can meet: every token of its training
  texts, then the most frequent pieces (by the Unigram model's own log-probabilities) written
  in the scripts of the languages it serves, up to a size. A text whose tokens were all kept
  is tokenised exactly as before, so the model gives it the same logits; a dropped piece is
  spelled with the kept pieces it is made of, and a character with no piece left becomes the
  unknown token, as any unseen character always did.

Both return an ordinary Hugging Face model and fast tokenizer: the saved folder loads with
``transformers.pipeline`` like any other.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from topicguard._exceptions import DataError, ModelError

__all__ = ["LANGUAGE_SCRIPTS", "drop_layers", "encoder_layers", "trim_vocabulary"]

logger = logging.getLogger(__name__)

# The scripts (first word of a letter's Unicode name) each language is written in. Digits,
# punctuation, symbols and spaces belong to every language.
LANGUAGE_SCRIPTS: dict[str, frozenset[str]] = {
    **{
        lang: frozenset({"LATIN"})
        for lang in (
            "en",
            "es",
            "de",
            "fr",
            "it",
            "pt",
            "nl",
            "sv",
            "da",
            "no",
            "nb",
            "fi",
            "pl",
            "cs",
            "sk",
            "hu",
            "ro",
            "hr",
            "sl",
            "tr",
            "id",
            "ms",
            "vi",
            "ca",
            "et",
            "lv",
            "lt",
            "tl",
            "sw",
        )  # fmt: skip
    },
    "zh": frozenset({"CJK"}),
    "ja": frozenset({"CJK", "HIRAGANA", "KATAKANA"}),
    "ko": frozenset({"HANGUL", "CJK"}),
    "ru": frozenset({"CYRILLIC"}),
    "uk": frozenset({"CYRILLIC"}),
    "bg": frozenset({"CYRILLIC"}),
    "el": frozenset({"GREEK"}),
    "ar": frozenset({"ARABIC"}),
    "fa": frozenset({"ARABIC"}),
    "he": frozenset({"HEBREW"}),
    "hi": frozenset({"DEVANAGARI"}),
    "th": frozenset({"THAI"}),
}


def encoder_layers(model: Any) -> Any:
    """The ``ModuleList`` of a model's encoder layers (BERT, RoBERTa/XLM-R, DeBERTa, ModernBERT)."""
    owner, name = _layer_slot(model)
    return getattr(owner, name)


def _layer_slot(model: Any) -> tuple[Any, str]:
    """The module that holds the encoder layers, and the attribute it holds them under."""
    base = getattr(model, "base_model", model)
    for owner in (getattr(base, "encoder", None), base):
        for name in ("layer", "layers"):
            layers = getattr(owner, name, None) if owner is not None else None
            if layers is not None and hasattr(layers, "__len__"):
                return owner, name
    raise ModelError(
        f"cannot find the encoder layers of {type(model).__name__}: layer dropping works on "
        "BERT-like encoders; leave the layer count unset for this model"
    )


def check_layer_counts(total: int, *, keep: int | None = None, frozen: int | None = None) -> None:
    """Refuse layer counts a ``total``-layer encoder cannot take: ``keep`` (layers kept by
    :func:`drop_layers`) in 1..total, ``frozen`` (:func:`freeze_lower_layers`, counted in
    the kept layers) in 1..kept - 1. ``train`` asks before any training, the cuts again."""
    if keep is not None and not 1 <= keep <= total:
        raise DataError(f"layers must be between 1 and {total} for this model, got {keep}")
    kept = keep or total
    if frozen is not None and not 1 <= frozen < kept:
        raise DataError(
            f"frozen layers must be between 1 and {kept - 1} for this model (it has "
            f"{kept} and at least one must train), got {frozen}"
        )


def drop_layers(model: Any, keep: int) -> None:
    """Keep the lower ``keep`` encoder layers of ``model`` (in place) and say so in its config,
    so that the saved folder loads as a ``keep``-layer model."""
    import torch

    owner, name = _layer_slot(model)
    layers = getattr(owner, name)
    total = len(layers)
    check_layer_counts(total, keep=keep)
    if keep == total:
        return
    setattr(owner, name, torch.nn.ModuleList(list(layers)[:keep]))
    model.config.num_hidden_layers = keep
    # per-layer settings some configs keep (ModernBERT)
    layer_types = getattr(model.config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == total:
        model.config.layer_types = layer_types[:keep]
    logger.info("kept the lower %d of %d encoder layers", keep, total)


def freeze_lower_layers(model: Any, frozen: int) -> None:
    """Keep ``model``'s embeddings and its lower ``frozen`` encoder layers fixed (in place):
    the backward pass stops above them, so a training step skips their gradients, about two
    thirds of their cost. At least one layer must stay trainable."""
    layers = encoder_layers(model)
    check_layer_counts(len(layers), frozen=frozen)
    base = getattr(model, "base_model", model)
    embeddings = getattr(base, "embeddings", None)
    for module in [embeddings, *list(layers)[:frozen]]:
        if module is not None:
            module.requires_grad_(False)
    logger.info(
        "the embeddings and the lower %d of %d encoder layers stay fixed", frozen, len(layers)
    )


def trim_vocabulary(
    model: Any,
    tokenizer: Any,
    *,
    texts: Iterable[str],
    languages: Sequence[str],
    size: int,
) -> Any:
    """Shrink ``model``'s word embeddings (in place) and ``tokenizer`` (a new one is returned)
    to at most ``size`` tokens: the special tokens, every token of ``texts``, the single
    characters of the kept pieces, then the most probable pieces written in ``languages``'
    scripts. Only Unigram (SentencePiece) tokenizers can be trimmed this way."""
    import torch
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    if state.get("model", {}).get("type") != "Unigram":
        raise ModelError(
            "vocabulary trimming needs a SentencePiece (Unigram) tokenizer; "
            "leave the vocabulary size unset for this model"
        )
    scripts = _scripts(languages)
    pieces: list[list[Any]] = state["model"]["vocab"]
    embeddings = model.get_input_embeddings().weight
    if len(pieces) > embeddings.shape[0]:
        raise ModelError("the tokenizer and the model's embeddings disagree on the vocabulary")
    if size >= embeddings.shape[0]:
        return tokenizer

    keep = {token["id"] for token in state.get("added_tokens", [])}
    keep |= {int(i) for i in tokenizer.all_special_ids}
    # the lowest-scored piece fixes the Unigram model's penalty for unknown characters:
    # keeping it keeps every kept text's segmentation exactly as it was
    keep.add(min(range(len(pieces)), key=lambda i: pieces[i][1]))
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        keep.update(ids)
    needed = len(keep)
    if needed > size:
        raise DataError(
            f"the training texts use {needed:,} distinct tokens, more than the vocabulary size "
            f"{size:,}: raise it to at least {needed:,}, or 0 to keep the whole vocabulary"
        )
    index = {piece: i for i, (piece, _) in enumerate(pieces)}
    keep |= _characters_of(keep, pieces, index)
    served = frozenset(languages)
    by_score = sorted(range(len(pieces)), key=lambda i: -pieces[i][1])
    for i in by_score:
        if len(keep) >= size:
            break
        if i not in keep and _written_in(pieces[i][0], scripts) and _may_be(pieces[i][0], served):
            extra = (_characters_of({i}, pieces, index) | {i}) - keep
            if len(keep) + len(extra) <= size:
                keep |= extra
    kept = sorted(keep)
    new_id = {old: new for new, old in enumerate(kept)}
    state["model"]["vocab"] = [pieces[i] for i in kept if i < len(pieces)]
    state["model"]["unk_id"] = new_id[state["model"]["unk_id"]]
    for token in state.get("added_tokens", []):
        token["id"] = new_id[token["id"]]
    _remap_post_processor(state.get("post_processor"), new_id)

    with torch.no_grad():
        rows = torch.tensor(kept)
        weight = embeddings.detach()[rows].clone()
        new = torch.nn.Embedding(len(kept), weight.shape[1], padding_idx=_new_pad(model, new_id))
        new.weight.copy_(weight)
        new.weight.requires_grad_(embeddings.requires_grad)
    model.set_input_embeddings(new)
    model.config.vocab_size = len(kept)
    if getattr(model.config, "pad_token_id", None) is not None:
        model.config.pad_token_id = new_id[model.config.pad_token_id]

    backend = Tokenizer.from_str(json.dumps(state))
    special = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    trimmed = PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=tokenizer.model_max_length, **special
    )
    logger.info(
        "vocabulary trimmed from %d to %d tokens (%d from the training texts) for %s",
        embeddings.shape[0],
        len(kept),
        needed,
        ", ".join(languages),
    )
    return trimmed


def _scripts(languages: Sequence[str]) -> frozenset[str]:
    unknown = [lang for lang in languages if lang not in LANGUAGE_SCRIPTS]
    if unknown:
        raise DataError(
            f"cannot trim the vocabulary for {', '.join(unknown)}: its script is not known, so "
            "trimming could drop the language; pass --multilingual-vocabulary 0 to keep it whole"
        )
    return frozenset().union(*(LANGUAGE_SCRIPTS[lang] for lang in languages))


def _written_in(piece: str, scripts: frozenset[str]) -> bool:
    """Whether every letter of ``piece`` is in one of ``scripts`` (marks, digits and
    punctuation go with any script)."""
    for char in piece.replace("\u2581", ""):
        if unicodedata.category(char)[0] == "L":
            name = unicodedata.name(char, "")
            if name.split(" ", 1)[0] not in scripts:
                return False
    return True


def _may_be(piece: str, languages: frozenset[str], top: int = 5) -> bool:
    """Whether the language identifier puts one of ``languages`` among its ``top`` guesses
    for ``piece``, or cannot tell (a fragment any language may use)."""
    from topicguard.languages import _identifier

    ranked = _identifier().rank(piece.replace("\u2581", " ").strip())
    if ranked[0][1] - ranked[top][1] < 1e-6:
        return True
    return any(lang in languages for lang, _ in ranked[:top])


def _characters_of(ids: set[int], pieces: list[list[Any]], index: dict[str, int]) -> set[int]:
    """The single-character pieces of the characters in ``ids``' pieces (so that a kept
    character is never turned into the unknown token by a trim)."""
    found = set()
    for i in ids:
        if i >= len(pieces):
            continue
        for char in pieces[i][0]:
            j = index.get(char)
            if j is not None:
                found.add(j)
    return found


def _remap_post_processor(processor: dict[str, Any] | None, new_id: dict[int, int]) -> None:
    if not processor:
        return
    for special in processor.get("special_tokens", {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    for name in ("sep", "cls"):  # RobertaProcessing / BertProcessing: [token, id]
        if isinstance(processor.get(name), list):
            processor[name][1] = new_id[processor[name][1]]
    for inner in processor.get("processors", []):
        _remap_post_processor(inner, new_id)


def _new_pad(model: Any, new_id: dict[int, int]) -> int | None:
    pad = getattr(model.config, "pad_token_id", None)
    return new_id.get(pad) if pad is not None else None

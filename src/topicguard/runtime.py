"""``TopicGuard``: load a trained guard and classify texts. The CLI, the server, the
benchmarks and Python users all go through this one object.

Backends: ``torch`` (the Hugging Face model), ``onnx`` (``onnx/model.onnx``) and
``onnx-int8`` (``onnx/model.int8.onnx``), made by ``topicguard export``; ``auto`` takes
the fastest one present. Every backend batches texts in order of length to pad little.

Languages: a guard whose spec lists several languages detects each text's language
(:mod:`topicguard.languages`). When the folder holds a ``multilingual/`` guard (trained from
multilingual-e5-small for languages the fast model cannot serve), texts in the fast model's
``fast_languages`` stay on the fast model and all others go to the multilingual one; each
model applies its own calibration and threshold.

Second opinion: the multilingual model is also a second, larger model for the fast
languages. When the fast model is unsure of a text (calibrated score inside the guard's
``routing.second_opinion`` band, by default between 0.1 and 0.9: a few percent of traffic),
the text's score becomes the mean of both models' scores, held to the fast model's
threshold. Confident texts (most of them) pay for one model only.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from topicguard._exceptions import DataError, MissingDependencyError, ModelError
from topicguard.folder import GuardMetadata, Routing, multilingual_path, onnx_file
from topicguard.sentences import SentenceCheck, sentences
from topicguard.verdict import Verdict

if TYPE_CHECKING:
    from topicguard.languages import Detection, LanguageDetector

__all__ = [
    "BACKENDS",
    "Backend",
    "Judgement",
    "OnnxBackend",
    "TopicGuard",
    "TorchBackend",
    "Verdict",
]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


@dataclass
class Judgement:
    """Scores, the threshold each text is held to, the detected languages, and which texts
    the fast model passed on for a second opinion."""

    scores: Any  # numpy float array
    thresholds: Any  # numpy float array: a routed text meets its own model's threshold
    langs: list[str | None]
    supported: list[bool | None]
    second_opinion: list[bool]  # True: the score is the mean of both models' (a second opinion)

    @property
    def allowed(self) -> Any:
        return self.scores >= self.thresholds


class Backend(Protocol):
    """What runs a guard's model: raw logits (one row per text, columns in the model's label
    order) for a list of texts, each truncated to the guard's window."""

    name: str
    tokenizer: Any
    max_length: int

    def logits(self, texts: list[str], batch_size: int = 64) -> Any: ...


class TorchBackend:
    """The Hugging Face model on PyTorch."""

    name = "torch"

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    def logits(self, texts: list[str], batch_size: int = 64) -> Any:
        from topicguard.models import torch_logits

        return torch_logits(
            self.model, self.tokenizer, texts, max_length=self.max_length, batch_size=batch_size
        )


class OnnxBackend:
    """An exported graph on ONNX Runtime's CPU provider.

    Each run of the graph uses one core, and a batch's chunks run on ``threads`` cores at
    once (default: every core this process may use). Measured on 2 cores with the routed
    guard's int8 MiniLM: one core per run answered a single query faster than two (2.3 ms
    against 2.5 ms: no hand-over between threads at every op) and two chunks at a time ran
    batches at 1,157 texts/s against 982/s for two cores sharing each run."""

    def __init__(
        self, path: Path, tokenizer: Any, *, max_length: int, threads: int | None = None
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime", "onnx") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # No idle thread spin-waits for work: on a small machine a routed guard's two
        # sessions (or the server's other threads) would otherwise steal each other's cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.threads = threads if threads is not None else available_cores()
        self._pool: ThreadPoolExecutor | None = None
        self.name = "onnx-int8" if path.name.endswith(".int8.onnx") else "onnx"
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.encoder = _rust_encoder(tokenizer, max_length)
        self.pad_right = getattr(tokenizer, "padding_side", "right") != "left"

    def logits(self, texts: list[str], batch_size: int = 64) -> Any:
        """Logits in input order. Texts are tokenized once, sorted by token count and run in
        chunks of at most ``batch_size`` texts and about ``TOKEN_BUDGET`` padded tokens, so
        a batch pads little and each run's activations stay in the CPU's cache."""
        import numpy as np

        logits = None
        for block in range(0, len(texts), _ENCODE_BLOCK):  # bounds the padded id arrays
            inputs = self.encode(texts[block : block + _ENCODE_BLOCK])
            ids = next(iter(inputs.values()))
            mask = inputs.get("attention_mask")  # a graph without one: every column counts
            lengths = mask.sum(axis=1) if mask is not None else np.full(len(ids), ids.shape[1])
            order = np.argsort(lengths, kind="stable")
            rows = [order[chunk] for chunk in _chunks(lengths[order], batch_size)]
            for picked, out in zip(rows, self._run(inputs, lengths, rows), strict=True):
                if logits is None:
                    logits = np.empty((len(texts), out.shape[1]), dtype=np.float32)
                logits[block + picked] = out
        return logits if logits is not None else np.empty((0, 2), dtype=np.float32)

    def _run(self, inputs: dict[str, Any], lengths: Any, rows: list[Any]) -> list[Any]:
        """The graph's first output for each chunk of ``rows``, fed only the columns that
        hold tokens (the right or the left end), on up to ``threads`` cores at once."""

        def run(picked: Any) -> Any:
            width = int(lengths[picked].max())
            cut = slice(0, width) if self.pad_right else slice(-width, None)
            return self.session.run(None, {k: v[picked][:, cut] for k, v in inputs.items()})[0]

        if len(rows) < 2 or self.threads < 2:
            return [run(picked) for picked in rows]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="topicguard-onnx")
        return list(self._pool.map(run, rows))

    def encode(self, texts: list[str]) -> dict[str, Any]:
        """The model's inputs for ``texts``, padded to the longest and truncated to the
        window: straight from the Rust tokenizer when there is one (a single query costs a
        third of the Python wrapper's time), else through the wrapper. Same ids either way."""
        import numpy as np

        if self.encoder is None:
            batch = self.tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="np",
            )
            return {name: batch[name].astype(np.int64) for name in self.inputs}
        encodings = self.encoder.encode_batch(texts)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        return {name: np.array(columns[name], dtype=np.int64) for name in self.inputs}


class TopicGuard:
    """A trained guard. ``TopicGuard.load(DIR).classify(["Where is my parcel?"])``."""

    def __init__(
        self,
        backend: Backend,
        tokenizer: Any,
        metadata: GuardMetadata,
        path: Path,
        label2id: dict[str, int],
        *,
        multilingual: TopicGuard | None = None,
        second_opinion: bool = True,
        sentence_check: SentenceCheck | None = SentenceCheck(),  # noqa: B008 - frozen
    ) -> None:
        self.backend = backend
        self.sentence_check = sentence_check
        self.multilingual = multilingual
        self.tokenizer = tokenizer
        self.metadata = metadata
        self.path = path
        self.threshold = metadata.threshold
        # scores are calibrated: the logit margin is divided by the fitted temperature
        self.temperature = metadata.temperature
        self.max_length = metadata.max_length
        self.allowed_label: str = metadata.allowed_label
        self.blocked_label: str = metadata.blocked_label
        if self.allowed_label not in label2id:
            raise ModelError(
                f"{path}: the model config has no label {self.allowed_label!r} "
                f"(labels: {sorted(label2id)}); retrain it with `topicguard train`"
            )
        self.allowed_index = int(label2id[self.allowed_label])
        routing = metadata.routing or Routing()
        self.languages: list[str] = list(metadata.languages)
        self.fast_languages: list[str] = list(routing.fast_languages)
        self.second_opinion_band = routing.second_opinion
        if multilingual is None or not second_opinion:
            self.second_opinion_band = None
        self.detector: LanguageDetector | None = None
        if self.languages:
            from topicguard.languages import LanguageDetector

            self.detector = LanguageDetector(self.languages)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        backend: str = "auto",
        threads: int | None = None,
        warm_up: bool = True,
        second_opinion: bool = True,
        sentence_check: bool = True,
    ) -> TopicGuard:
        """Load a model folder written by ``topicguard train``. Never touches the network.

        ``backend="auto"`` takes int8 ONNX, else fp32 ONNX, else PyTorch.
        ``second_opinion=False`` keeps every fast-language text on the fast model alone
        (steadier tail latency, a little less accuracy; see the module docstring).
        ``sentence_check=False`` judges a message only as a whole, never sentence by
        sentence (:mod:`topicguard.sentences`).
        """
        path = Path(path)
        metadata = GuardMetadata.read(path)
        if backend not in BACKENDS:
            raise ModelError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if backend == "auto":
            present = [b for b in ("onnx-int8", "onnx") if onnx_file(path, b).is_file()]
            backend = present[0] if present else "torch"
        max_length = metadata.max_length
        if backend == "torch":
            if threads is not None:
                import torch

                torch.set_num_threads(threads)
            from topicguard.models import load_encoder

            model, tokenizer = load_encoder(str(path))
            model.eval()
            runner: Backend = TorchBackend(model, tokenizer, max_length=max_length)
            config_labels = model.config.label2id or {}
            label2id: dict[str, int] = {str(k): int(v) for k, v in config_labels.items()}
        else:
            onnx_path = onnx_file(path, backend)
            if not onnx_path.is_file():
                flag = " --int8" if backend == "onnx-int8" else ""
                if backend == "onnx" and onnx_file(path, "onnx-int8").is_file():
                    flag = " --int8 --keep-fp32"  # an int8 export removed the fp32 graph
                raise ModelError(
                    f"{path} has no {onnx_path.relative_to(path)}: run "
                    f"`topicguard export {path}{flag}` first"
                )
            tokenizer = _load_tokenizer(path)
            runner = OnnxBackend(onnx_path, tokenizer, max_length=max_length, threads=threads)
            label2id = _label2id(path)
        multilingual = None
        second = multilingual_path(path)
        if second is not None:
            # its int8 copy is optional (export keeps it only when it agrees with PyTorch)
            if backend == "onnx-int8" and not onnx_file(second, backend).is_file():
                backend = "onnx"
            multilingual = cls.load(second, backend=backend, threads=threads, warm_up=warm_up)
        guard = cls(
            runner,
            tokenizer,
            metadata,
            path,
            label2id,
            multilingual=multilingual,
            second_opinion=second_opinion,
            sentence_check=SentenceCheck() if sentence_check else None,
        )
        if warm_up:
            guard.scores(["warm-up"])
        return guard

    @property
    def backend_name(self) -> str:
        return str(self.backend.name)

    @property
    def model(self) -> Any:
        """The PyTorch model (``torch`` backend only)."""
        if not isinstance(self.backend, TorchBackend):
            raise ModelError("the PyTorch model is loaded only with backend='torch'")
        return self.backend.model

    def logits(self, texts: Sequence[str], *, batch_size: int = 64) -> Any:
        """Raw logits for each text (numpy ``[n, 2]``), in input order.

        A text longer than the model's window is not judged on its first tokens alone: it
        is cut into half-overlapping windows and judged by its least on-topic window, so
        an instruction buried after 3,000 characters of filler still blocks the message.
        """
        return self._logits(_checked(texts), batch_size)

    def _logits(self, texts: list[str], batch_size: int) -> Any:
        """:meth:`logits` of texts already through :func:`_checked`."""
        import numpy as np

        from topicguard.models import softmax

        pieces, owners = self._windows(texts)
        logits = self.backend.logits(pieces, batch_size=batch_size)
        if len(pieces) == len(texts):
            return logits
        allowed = softmax(logits.astype(np.float64))[:, self.allowed_index]
        result = np.empty((len(texts), logits.shape[1]), dtype=logits.dtype)
        best = np.full(len(texts), np.inf)
        for piece, owner in enumerate(owners):
            if allowed[piece] < best[owner]:
                best[owner] = allowed[piece]
                result[owner] = logits[piece]
        return result

    def _windows(self, texts: list[str]) -> tuple[list[str], list[int]]:
        """Texts cut at token boundaries into windows of ``max_length`` tokens, each window
        overlapping the next by half, and the index of the text each window came from."""
        spans = self._spans(texts)
        if not spans:
            return texts, list(range(len(texts)))
        pieces: list[str] = []
        owners: list[int] = []
        for i, text in enumerate(texts):
            for start, end in spans.get(i, [(0, len(text))]):
                pieces.append(text[start:end])
                owners.append(i)
        return pieces, owners

    def _spans(self, texts: list[str]) -> dict[int, list[tuple[int, int]]]:
        """The character spans of the windows of each text longer than one window (texts
        that fit are left out)."""
        window = max(self.max_length - 2, 8)  # room for [CLS] and [SEP]
        # cheap pre-filter: no tokenizer makes more tokens than a text has UTF-8 bytes
        long_ones = [i for i, t in enumerate(texts) if len(t.encode("utf-8")) > window]
        if not long_ones:
            return {}
        from topicguard.models import quiet_transformers

        with quiet_transformers():  # no "longer than the maximum length" notice: we cut it
            encoded = self.tokenizer(
                [texts[i] for i in long_ones], add_special_tokens=False, return_offsets_mapping=True
            )
        spans: dict[int, list[tuple[int, int]]] = {}
        for i, offsets in zip(long_ones, encoded["offset_mapping"], strict=True):
            if len(offsets) <= window:
                continue
            starts = range(0, len(offsets) - window // 2, window // 2)
            spans[i] = [
                (offsets[s][0], offsets[min(s + window, len(offsets)) - 1][1]) for s in starts
            ]
        return spans

    def deciding_window(self, text: str) -> tuple[int, int, int] | None:
        """For a text longer than this model's window (see :meth:`logits`): the character
        span ``(start, end)`` of the window that decided its score, and how many windows it
        was cut into; None for a text that fits in one. This model only: no routing."""
        text = _checked([text])[0]
        spans = self._spans([text]).get(0)
        if not spans:
            return None
        import numpy as np

        from topicguard.models import softmax

        logits = self.backend.logits([text[start:end] for start, end in spans])
        allowed = softmax(logits.astype(np.float64))[:, self.allowed_index]
        start, end = spans[int(np.argmin(allowed))]
        return start, end, len(spans)

    def margins(self, texts: Sequence[str], *, batch_size: int = 64) -> Any:
        """Uncalibrated evidence of this model (no routing) for each text: the allowed label's
        logit minus the log-sum-exp of the others, so ``sigmoid(margin)`` is the raw softmax
        score."""
        return self._margins(_checked(texts), batch_size)

    def _margins(self, texts: list[str], batch_size: int) -> Any:
        import numpy as np

        logits = self._logits(texts, batch_size).astype(np.float64)
        if len(logits) == 0:
            return np.empty(0)
        others = np.delete(logits, self.allowed_index, axis=1)
        return logits[:, self.allowed_index] - np.logaddexp.reduce(others, axis=1)

    def routes(self, texts: Sequence[str]) -> tuple[list[Detection | None], list[bool]]:
        """The detected language of each text, and whether it goes to the multilingual
        model (never when this guard has none)."""
        from topicguard.languages import UNDETERMINED

        detections: list[Detection | None] = (
            list(self.detector.detect_all(texts)) if self.detector else [None] * len(texts)
        )
        if self.multilingual is None:
            return detections, [False] * len(texts)
        keep = {*self.fast_languages, UNDETERMINED}
        return detections, [d is not None and d.lang not in keep for d in detections]

    def judge(
        self, texts: Sequence[str], *, batch_size: int = 64, by_sentence: bool = True
    ) -> Judgement:
        """Calibrated scores and per-text thresholds, each text routed by its language.
        ``by_sentence=False`` skips the sentence check (:mod:`topicguard.sentences`) for
        these texts: each is judged only as a whole (in windows when it is long)."""
        import numpy as np

        from topicguard.metrics import sigmoid

        texts = _checked(texts)  # before routing, so that the error names the caller's index
        detections, routed = self.routes(texts)
        scores = np.empty(len(texts))
        thresholds = np.empty(len(texts))
        here = [i for i, r in enumerate(routed) if not r]
        there = [i for i, r in enumerate(routed) if r]
        for model, rows in ((self, here), (self.multilingual, there)):
            if rows:
                assert model is not None  # routes() sends nothing to a missing model
                picked = [texts[i] for i in rows]
                scores[rows] = self._scored(model, picked, batch_size, by_sentence=by_sentence)
                thresholds[rows] = model.threshold
        second = np.zeros(len(texts), dtype=bool)
        if self.second_opinion_band is not None and here:
            assert self.multilingual is not None  # no band without the second model
            low, high = self.second_opinion_band
            unsure = [i for i in here if low < scores[i] < high]
            if unsure:
                other = self.multilingual
                margins = other._margins([texts[i] for i in unsure], batch_size)
                scores[unsure] = (scores[unsure] + sigmoid(margins / other.temperature)) / 2
                second[unsure] = True
        return Judgement(
            scores=scores,
            thresholds=thresholds,
            langs=[d.lang if d else None for d in detections],
            supported=[d.supported if d else None for d in detections],
            second_opinion=second.tolist(),
        )

    def _scored(
        self, model: TopicGuard, texts: list[str], batch_size: int, *, by_sentence: bool
    ) -> Any:
        """``model``'s calibrated scores for ``texts``; a text it allows below
        ``sentence_check.unsure_below`` takes the score of its most off-topic sentence when
        that sentence alone scores under ``sentence_check.floor`` (:mod:`topicguard.sentences`)."""
        from topicguard.metrics import sigmoid

        scores = sigmoid(model._margins(texts, batch_size) / model.temperature)
        check = self.sentence_check
        if check is None or not by_sentence:
            return scores
        parts: list[str] = []
        owners: list[int] = []
        for i, text in enumerate(texts):
            if model.threshold <= scores[i] < check.unsure_below:
                found = sentences(text, check)
                parts += found
                owners += [i] * len(found)
        if not parts:
            return scores
        alone = sigmoid(model._margins(parts, batch_size) / model.temperature)
        for owner, score in zip(owners, alone, strict=True):
            if score < check.floor and score < scores[owner]:
                scores[owner] = score
        return scores

    def scores(self, texts: Sequence[str], *, batch_size: int = 64) -> Any:
        """Calibrated probability on topic for each text (numpy array), in input order."""
        return self.judge(texts, batch_size=batch_size).scores

    def classify(
        self, texts: Sequence[str] | str, *, batch_size: int = 64, by_sentence: bool = True
    ) -> list[Verdict]:
        """Verdicts at the stored threshold(s). A single string is treated as a list of one;
        ``by_sentence`` as in :meth:`judge`."""
        if isinstance(texts, str):
            texts = [texts]
        judged = self.judge(texts, batch_size=batch_size, by_sentence=by_sentence)
        return [
            Verdict(
                text=text,
                label=self.allowed_label if allowed else self.blocked_label,
                score=round(float(score), 6),
                allowed=bool(allowed),
                lang=lang,
                lang_supported=supported,
                threshold=float(threshold),
            )
            for text, score, threshold, allowed, lang, supported in zip(
                texts,
                judged.scores,
                judged.thresholds,
                judged.allowed,
                judged.langs,
                judged.supported,
                strict=True,
            )
        ]

    def classify_conversation(self, messages: Sequence[Any]) -> Verdict:
        """The verdict on a conversation (an OpenAI message list): its latest user message
        decides, and only user messages count. Rule, in
        :func:`topicguard.conversations.classify_conversations`:

        - the latest user message allowed on its own: allowed;
        - blocked on its own, it is still allowed (``context=True``) when it is a short
          follow-up (at most ``FOLLOW_UP_MAX_WORDS`` words, or ``FOLLOW_UP_MAX_CJK_CHARS``
          Chinese or Japanese characters), not confidently off topic (score at least
          ``CONTEXT_SCORE_FLOOR``), the user turn before it was allowed (on its own, or as
          such a follow-up itself, up to ``CONTEXT_TURNS`` user turns back), and the two read
          together are allowed ("where is my parcel SB123…" then "and tomorrow?");
        - anything else stays blocked: an injection or an off-topic request after on-topic
          turns is judged on its own, and a blocked earlier turn never blocks a later one.

        The verdict's ``text``, ``lang`` and ``lang_supported`` are the latest message's.
        No user message (or an empty list) raises :class:`DataError`.
        """
        return self.classify_conversations([messages])[0]

    def classify_conversations(
        self, conversations: Sequence[Sequence[Any]], *, batch_size: int = 64
    ) -> list[Verdict]:
        """:meth:`classify_conversation` of several conversations, batched."""
        from topicguard.conversations import classify_conversations

        return classify_conversations(self, conversations, batch_size=batch_size)

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short hash of the guard's metadata (its own and its multilingual model's):
        changes when the model is retrained or recalibrated. Decision logs record it."""
        import hashlib

        metadata = self.metadata.to_dict()
        digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode("utf-8"))
        if self.multilingual is not None:
            digest.update(self.multilingual.fingerprint.encode("ascii"))
        return digest.hexdigest()[:12]

    def __repr__(self) -> str:
        return (
            f"TopicGuard(path={str(self.path)!r}, backend={self.backend_name!r}, "
            f"threshold={self.threshold:.3f})"
        )


# Padded tokens per ONNX run. Measured on a 2-core machine with the routed guard's int8
# graphs, one run per core: MiniLM ran 500 test texts at ~1,130/s in chunks of 256 or 512
# tokens against 720/s padded to the longest of 64; multilingual-e5's 24 second opinions ran
# at 79/s in one chunk padded to its longest text, 203/s one at a time, ~250/s at 256 tokens.
TOKEN_BUDGET = 256
_ENCODE_BLOCK = 4096


def _chunks(sorted_lengths: Any, batch_size: int) -> list[slice]:
    """Consecutive runs of texts (sorted by token count) holding at most ``batch_size``
    texts and, unless one text alone exceeds it, ``TOKEN_BUDGET`` padded tokens."""
    out = []
    start = 0
    for end in range(1, len(sorted_lengths) + 1):
        padded = (end - start) * int(sorted_lengths[end - 1])
        full = end - start > batch_size or padded > TOKEN_BUDGET
        if full and end - 1 > start:
            out.append(slice(start, end - 1))
            start = end - 1
    if start < len(sorted_lengths):
        out.append(slice(start, len(sorted_lengths)))
    return out


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def _checked(texts: Sequence[str]) -> list[str]:
    """The texts, each one non-empty and encodable: a lone surrogate (which a JSON body can
    carry as ``\\ud800``) becomes U+FFFD instead of crashing the tokenizer."""
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"text {i + 1} is empty: give the guard something to judge")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                out[i] = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return out


def _rust_encoder(tokenizer: Any, max_length: int) -> Any:
    """A copy of a fast tokenizer's Rust backend that truncates to ``max_length`` and pads to
    the longest text of a batch, as the wrapper's ``__call__`` would; None for slow ones."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or tokenizer.pad_token_id is None:
        return None
    from tokenizers import Tokenizer

    encoder = Tokenizer.from_str(backend.to_str())
    encoder.enable_truncation(max_length)
    encoder.enable_padding(
        direction=tokenizer.padding_side,
        pad_id=tokenizer.pad_token_id,
        pad_token=tokenizer.pad_token,
        pad_type_id=getattr(tokenizer, "pad_token_type_id", 0),
    )
    return encoder


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    from topicguard.models import quiet_transformers

    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(str(path), use_fast=True, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer of {path}: {exc}") from exc


def _label2id(path: Path) -> dict[str, int]:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        return {str(k): int(v) for k, v in config["label2id"].items()}
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}/config.json has no usable label2id: retrain the model") from exc

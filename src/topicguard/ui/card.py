"""What the page shows of a guard: its card (what the model folder says about itself) and the
explanation of one verdict (which model judged, the deciding window of a long text). Plain
functions of a loaded ``TopicGuard``; they run on the service's worker thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from topicguard.metrics import HEADLINE_METRICS
from topicguard.report import PLOTS

__all__ = ["explain", "guard_card", "report_plots"]


def explain(guard: Any, texts: list[str]) -> dict[str, Any]:
    """The verdict on ``texts`` (one message, or a conversation's user turns, the latest
    deciding) with what the page shows beside it: threshold, the model that judged the
    latest message and, for a long one, the window that decided."""
    if len(texts) == 1:
        verdict = guard.classify(texts)[0]
    else:
        verdict = guard.classify_conversation([{"role": "user", "content": t} for t in texts])
    latest = texts[-1]
    _, routed = guard.routes([latest])
    model = guard.multilingual if routed[0] else guard
    second = False
    if not routed[0] and getattr(guard, "second_opinion_band", None) is not None:
        second = bool(guard.judge([latest]).second_opinion[0])
    window = model.deciding_window(latest)
    result = verdict.to_dict() | {
        "threshold": verdict.threshold,
        "context": verdict.context,
        "model": "multilingual" if routed[0] else "fast",
        "model_name": _base_model(model.metadata.to_dict()),
        "second_opinion": second,
        "chars": len(latest),
        "window": None,
    }
    if window is not None:
        start, end, count = window
        result["window"] = {"start": start, "end": end, "count": count, "text": latest[start:end]}
    return result


def guard_card(guard: Any, *, backend: str, report_dir: Path | None) -> dict[str, Any]:
    """What the model folder says about itself, ready for the guard card template."""
    meta = guard.metadata.to_dict()  # the folder's GuardMetadata, as topicguard.json holds it
    spec = meta.get("spec") or {}
    models = [("fast", meta)]
    if guard.multilingual is not None:
        models.append(("multilingual", guard.multilingual.metadata.to_dict()))
    routing = meta.get("routing") or {}
    return {
        "name": spec.get("name") or guard.path.name,
        "company": spec.get("company"),
        "purpose": spec.get("purpose"),
        "allowed_topics": [str(t) for t in spec.get("allowed_topics") or []],
        "blocked_topics": [str(t) for t in spec.get("blocked_topics") or []],
        "languages": [str(x) for x in meta.get("languages") or []],
        "fast_languages": [str(x) for x in routing.get("fast_languages") or []],
        "second_opinion": routing.get("second_opinion") if guard.multilingual else None,
        "backend": backend,
        "created": meta.get("created"),
        "fingerprint": getattr(guard, "fingerprint", None),
        "models": [_model_row(role, m) for role, m in models],
        "metric_names": [name for name in HEADLINE_METRICS if name != "n"],
        "plots": report_plots(report_dir),
    }


def report_plots(report_dir: Path | None) -> list[tuple[str, str]]:
    """The evaluation report's plots that exist in ``report_dir``: (file name, caption)."""
    if report_dir is None:
        return []
    return [(name, caption) for name, caption in PLOTS.items() if (report_dir / name).is_file()]


def _model_row(role: str, meta: dict[str, Any]) -> dict[str, Any]:
    calibration = meta.get("calibration") or {}
    validation = (meta.get("metrics") or {}).get("validation") or {}
    data = meta.get("data") or {}
    return {
        "role": role,
        "base_model": _base_model(meta),
        "threshold": meta.get("threshold"),
        "objective": meta.get("threshold_objective") or calibration.get("objective"),
        "temperature": calibration.get("temperature"),
        "n_train": data.get("n_train"),
        "n_validation": data.get("n_validation") or validation.get("n"),
        "validation": {k: v for k, v in validation.items() if isinstance(v, (int, float))},
    }


def _base_model(meta: dict[str, Any]) -> str:
    return str(meta.get("base_model") or (meta.get("training") or {}).get("base_model") or "?")

"""The guard on Ray (``pip install 'topicguard[ray]'``): Ray Serve for replicated, autoscaled
serving and Ray Data for batch scoring.

Serving: :func:`deployment` builds a Ray Serve application whose replicas each load the
guard once and answer the ``serve`` HTTP API unchanged (``POST /v1/classify``, ``/healthz``,
``/readyz``, ``/metrics``: the same app, :func:`topicguard.serve.create_app`, with the same
request and response JSON, limits and errors); concurrent requests meet in Ray Serve's
``@serve.batch`` and reach the guard's batched path together::

    from ray import serve
    from topicguard.integrations.ray import deployment

    serve.run(deployment("runs/guard", replicas=2), route_prefix="/")

or ``topicguard serve MODEL --ray [--replicas N | --autoscale MIN:MAX]``.

Batch scoring: :func:`score_with_ray` (``topicguard classify MODEL --input DIR --output DIR
--engine ray``) reads the partitions with Ray Data and classifies them with ``map_batches``
over a pool of actors that each load the guard once. Ray joins the cluster named by
``RAY_ADDRESS`` when set, else starts one on this machine.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topicguard._exceptions import DataError, MissingDependencyError

if TYPE_CHECKING:
    from topicguard.score import ScoreJob
    from topicguard.serve import ServeConfig

__all__ = [
    "GuardScorer",
    "deployment",
    "parse_autoscale",
    "require_ray",
    "run_serve",
    "score_with_ray",
]

logger = logging.getLogger(__name__)

MAX_BATCH_TEXTS = 64  # texts in one @serve.batch call, as the local server's micro-batches
BATCH_WAIT_S = 0.002


def require_ray() -> Any:
    """The ``ray`` module, or the error that names the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError("ray", "ray") from exc
    return ray


def _init() -> Any:
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    return ray


# -- batch scoring (Ray Data) ------------------------------------------------------------


class GuardScorer:
    """A Ray Data actor: loads the guard once, then classifies batches (Arrow tables with a
    ``text`` column) into ``classify``'s output rows."""

    def __init__(self, model_dir: str, backend: str, threads: int, second_opinion: bool) -> None:
        from topicguard.runtime import TopicGuard

        self.guard = TopicGuard.load(
            model_dir, backend=backend, threads=threads, second_opinion=second_opinion
        )

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        from topicguard.data import clean_texts
        from topicguard.score import verdict_rows

        texts = clean_texts(batch.column("text").to_pylist())
        rows = verdict_rows(self.guard, texts, len(texts) or 1) if texts else []
        # one fixed schema for every batch, an empty one included
        fields = [("text", pa.string()), ("label", pa.string()), ("score", pa.float64())]
        fields.append(("allowed", pa.bool_()))
        if self.guard.languages:
            fields += [("lang", pa.string()), ("lang_supported", pa.bool_())]
        return pa.table(
            {name: pa.array([r[name] for r in rows], type=kind) for name, kind in fields}
        )


def score_with_ray(job: ScoreJob, out: Path) -> int:
    """Score ``job``'s partitions into the folder ``out`` with Ray Data; the texts scored."""
    ray = _init()
    from ray import data as ray_data

    ray_data.DataContext.get_current().enable_progress_bars = False
    if not logger.isEnabledFor(logging.DEBUG):  # Ray Data reports every stage at INFO
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    dataset = _read(ray_data, job.partitions)
    cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
    # One CPU stays free for the tasks that read partitions: actors holding every CPU would
    # starve them and the job would never finish. Each actor runs cpus/actors threads.
    actors = job.actors or max(cpus - 1, 1)
    threads = job.threads or max(cpus // actors, 1)
    scored = dataset.map_batches(
        GuardScorer,
        fn_constructor_kwargs={
            "model_dir": str(job.model_dir),
            "backend": job.backend,
            "threads": threads,
            "second_opinion": job.second_opinion,
        },
        batch_size=job.batch_size,
        batch_format="pyarrow",
        compute=ray_data.ActorPoolStrategy(size=actors),
        num_cpus=1,
    )
    try:
        if job.output_format == "parquet":
            scored.write_parquet(str(out))
        else:
            scored.write_json(str(out), force_ascii=False)
            for part in out.glob("*.json"):  # JSON lines, named as the local engine names them
                part.rename(part.with_suffix(".jsonl"))
    except Exception as exc:  # a worker's error reaches here wrapped in Ray's own types
        raise DataError(f"scoring on Ray failed: {_cause(exc)}") from exc
    return sum(_count_rows(p, job.output_format) for p in sorted(out.iterdir()) if p.is_file())


def _read(ray_data: Any, partitions: list[Path]) -> Any:
    """One Ray dataset of the partitions' texts, as Arrow strings (the readers differ by
    format, and a CSV reader may take a column of numbers for integers)."""
    by_format: dict[str, list[str]] = {}
    for path in partitions:
        by_format.setdefault(path.suffix.lower(), []).append(str(path))
    datasets = []
    try:
        for suffix, paths in sorted(by_format.items()):
            if suffix == ".jsonl":
                dataset = ray_data.read_json(paths, lines=True, file_extensions=None)
            elif suffix == ".csv":
                dataset = ray_data.read_csv(paths, file_extensions=None)
            else:
                dataset = ray_data.read_parquet(paths, file_extensions=None)
            columns = dataset.columns() or []  # reads enough to fail on an unreadable file
            if "text" not in columns:
                raise DataError(
                    f"{paths[0]}: no 'text' column (columns: {', '.join(columns) or 'none'})"
                )
            datasets.append(dataset.map_batches(_texts_only, batch_format="pyarrow"))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read the partitions: {_cause(exc)}") from exc
    return datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]


def _texts_only(table: Any) -> Any:
    import pyarrow as pa

    return pa.table({"text": table.column("text").cast(pa.string())})


def _cause(exc: BaseException) -> str:
    """The innermost message of an error Ray wrapped, on one line."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def _count_rows(path: Path, output_format: str) -> int:
    if output_format == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


# -- serving (Ray Serve) -----------------------------------------------------------------


def parse_autoscale(value: str) -> tuple[int, int]:
    """``"MIN:MAX"`` replicas, checked."""
    try:
        low, high = (int(x) for x in value.split(":"))
    except ValueError:
        low = high = -1
    if not 0 < low <= high:
        raise DataError(f"--autoscale {value!r}: give MIN:MAX replicas, 1 <= MIN <= MAX")
    return low, high


def deployment(
    model_dir: str | Path,
    *,
    replicas: int = 1,
    autoscale: tuple[int, int] | None = None,
    config: ServeConfig | None = None,
    cpus_per_replica: float = 1.0,
) -> Any:
    """A bound Ray Serve application answering the ``serve`` HTTP API: ``replicas`` copies
    (or between ``autoscale``'s MIN and MAX, by load), each with the guard loaded once and
    ``cpus_per_replica`` inference threads."""
    require_ray()
    from ray import serve

    from topicguard.serve import ServeConfig

    config = config or ServeConfig(model_dir=Path(model_dir))
    if config.threads is None:
        config.threads = max(int(cpus_per_replica), 1)
    options: dict[str, Any] = {"ray_actor_options": {"num_cpus": cpus_per_replica}}
    if autoscale is not None:
        options["autoscaling_config"] = {
            "min_replicas": autoscale[0],
            "max_replicas": autoscale[1],
            "target_ongoing_requests": 16,
        }
    else:
        options["num_replicas"] = replicas
    replica = serve.deployment(name="topicguard", **options)(serve.ingress()(_GuardReplica))
    return replica.bind(config)


class _GuardReplica:
    """One Ray Serve replica: the guard, and ``serve``'s app around it with batches made by
    ``@serve.batch``."""

    def __init__(self, config: ServeConfig) -> None:
        from topicguard.runtime import TopicGuard

        self.config = config
        self.guard = TopicGuard.load(
            config.model_dir,
            backend=config.backend,
            threads=config.threads,
            second_opinion=config.second_opinion,
        )

    def __serve_build_asgi_app__(self) -> Any:
        from topicguard.serve import create_app

        return create_app(self.config, guard=self.guard, batcher=_ServeBatcher)


class _ServeBatcher:
    """What ``serve``'s app asks for batches, made of Ray Serve's ``@serve.batch``: the texts
    of concurrent requests (up to ``MAX_BATCH_TEXTS``) go to the guard in one call."""

    def __init__(self, guard: Any, config: ServeConfig, metrics: Any) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from ray import serve

        self.guard = guard
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="topicguard")
        self._batch = serve.batch(
            max_batch_size=MAX_BATCH_TEXTS,
            batch_wait_timeout_s=BATCH_WAIT_S,
            batch_size_fn=lambda items: sum(len(texts) for texts in items),
        )(self._classify_batch)

    def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.executor.shutdown(wait=True)

    async def classify(self, texts: list[str]) -> list[Any]:
        return list(await self._batch(texts))

    async def classify_conversation(self, messages: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.guard.classify_conversation, messages)

    async def _classify_batch(self, requests: list[list[str]]) -> list[list[Any]]:
        texts = [t for request in requests for t in request]
        self.metrics.observe_batch(len(texts))
        loop = asyncio.get_running_loop()
        verdicts = await loop.run_in_executor(
            self.executor, lambda: self.guard.classify(texts, batch_size=8)
        )
        out, start = [], 0
        for request in requests:
            out.append(verdicts[start : start + len(request)])
            start += len(request)
        return out


def run_serve(app: Any, *, host: str, port: int) -> None:
    """Run a :func:`deployment` on Ray Serve's HTTP proxy at ``host:port`` until SIGINT or
    SIGTERM, then shut Serve (and a Ray started here) down."""
    import signal
    import threading

    ray = _init()
    from ray import serve

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ray's own handlers would keep it running
        signal.signal(sig, lambda *_: stop.set())
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name="topicguard", route_prefix="/")
    logger.info("Ray Serve answers on http://%s:%d", host, port)
    stop.wait()
    serve.shutdown()
    ray.shutdown()

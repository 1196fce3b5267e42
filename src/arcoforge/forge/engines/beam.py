"""Run a :class:`~arcoforge.forge.bake.Plan` as an Apache Beam pipeline.

The pipeline is::

    Create([None]) | Prepare ─────────────────────────────┐ (singleton side input)
    Create(tasks) | AfterPrepare ◀────────────────────────┘
                  | Reshuffle | Store (plan.run_task, retried) | CombineGlobally(to list)
                  | Finalize (plan.finalize)

Store tasks wait on the prepare step through a singleton side input, so the whole build runs on
the runner (Dataflow, Flink, Spark, ...), not only its store tasks.  The default runner is Beam's
in-process ``FnApiRunner``; ``pipeline_options`` (``["runner=FlinkRunner", ...]`` or a dict) go
unchanged into ``PipelineOptions``.

Targets with a single committer (``target.single_committer``: Icechunk) are
prepared and finalized here, in the launching process: the pipeline's store tasks write into
forks and return them, and this process merges them and commits.  That needs a runner whose
results come back to this process (the in-process runners).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from arcoforge.errors import EngineError
from arcoforge.forge.engines.common import fork_of, run_forked_task, run_with_retries

__all__ = ["run"]

log = logging.getLogger("arcoforge.forge.engines.beam")

NAMESPACE = "arcoforge"

#: stats of builds whose finalize step ran in this process (in-process runners), by run token
_RESULTS: dict[str, list[Any] | None] = {}


def _options(pipeline_options: Sequence[str] | Mapping[str, Any] | None) -> Any:
    from apache_beam.options.pipeline_options import PipelineOptions

    if pipeline_options is None:
        return PipelineOptions([])
    if isinstance(pipeline_options, Mapping):
        return PipelineOptions.from_dictionary(dict(pipeline_options))
    flags = [o if o.startswith("-") else f"--{o}" for o in pipeline_options]
    return PipelineOptions(flags)


class _Prepare:
    def __init__(self, plan: Any) -> None:
        self.plan = plan

    def __call__(self, _: Any) -> bool:
        return bool(self.plan.prepare())


def _after_prepare(task: Any, prepared: Any) -> Any:
    return task


class _Store:
    """``plan.run_task`` with retries of transient errors (runners differ in their own)."""

    def __init__(self, plan: Any, retries: int, retry_delay: float,
                 fork: bytes | None = None) -> None:
        self.plan = plan
        self.retries = retries
        self.retry_delay = retry_delay
        self.fork = fork

    def _run(self, task: Any) -> tuple[Any, Any]:
        if self.fork is None:
            return self.plan.run_task(task), None

        return run_forked_task(self.plan, self.fork, task)

    def __call__(self, task: Any) -> Any:
        from apache_beam.metrics import Metrics

        def count_retry(task: Any, err: BaseException, attempt: int) -> None:
            Metrics.counter(NAMESPACE, "retries").inc()

        stats, fork = run_with_retries(self._run, task, self.retries, self.retry_delay,
                                       on_retry=count_retry)
        Metrics.counter(NAMESPACE, "tasks_skipped" if stats.skipped else "tasks_run").inc()
        Metrics.counter(NAMESPACE, "bytes_read").inc(stats.bytes_read)
        Metrics.counter(NAMESPACE, "bytes_written").inc(stats.bytes_written)
        return stats if self.fork is None else (stats, fork)


class _Collect:
    """Hand the forks and stats back to the launching process (in-process runners only)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, results: list[Any]) -> int:
        _RESULTS[self.token] = list(results)
        return len(results)


class _Finalize:
    def __init__(self, plan: Any, token: str, ntasks: int) -> None:
        self.plan = plan
        self.token = token
        self.ntasks = ntasks

    def __call__(self, stats: list[Any]) -> int:
        if len(stats) != self.ntasks:  # a runner that dropped work: never publish that
            raise EngineError(f"{len(stats)} of {self.ntasks} store tasks reported; not "
                               "publishing")
        self.plan.finalize(stats)
        _RESULTS[self.token] = list(stats)
        return len(stats)


def build_pipeline(pipeline: Any, plan: Any, token: str = "", retries: int = 2,
                   retry_delay: float = 1.0) -> Any:
    """Add the plan's transforms to ``pipeline``; returns the finalize step's PCollection."""
    import apache_beam as beam

    prepared = (pipeline
                | "Start" >> beam.Create([None])
                | "Prepare" >> beam.Map(_Prepare(plan)))
    return (pipeline
            | "Tasks" >> beam.Create(list(plan.tasks))
            | "AfterPrepare" >> beam.Map(_after_prepare, beam.pvalue.AsSingleton(prepared))
            | "Reshuffle" >> beam.Reshuffle()
            | "Store" >> beam.Map(_Store(plan, retries, retry_delay))
            | "CollectStats" >> beam.CombineGlobally(beam.combiners.ToListCombineFn())
            | "Finalize" >> beam.Map(_Finalize(plan, token, len(plan.tasks))))


class _ScanTo:
    """A Beam step: scan one ``(position, item)`` and write the pickled schema to
    ``<folder>/<position>.pkl`` (the launcher reads them back: any runner, any worker)."""

    def __init__(self, job: Any, folder: str) -> None:
        self.job = job
        self.folder = folder

    def __call__(self, element: tuple[int, Any]) -> int:
        import pickle

        import fsspec

        pos, item = element
        data = pickle.dumps(self.job(item), protocol=pickle.HIGHEST_PROTOCOL)
        with fsspec.open(f"{self.folder}/{pos}.pkl", "wb") as fh:
            fh.write(data)
        return pos


@contextlib.contextmanager
def session(pipeline_options: Sequence[str] | Mapping[str, Any] | None = None,
            runner: Any = None, **options: Any) -> Iterator[tuple[Any, dict[str, Any]]]:
    """``(scan_map, run_options)``: the scan runs as a Beam pipeline of its own (each source
    fetched and read on the runner's workers, schemas written to the build's work folder and
    read back here), then :func:`run` runs the store tasks with the same options."""
    run_options = {"pipeline_options": pipeline_options, "runner": runner, **options}

    def scan_map(job: Any, items: Any) -> list[Any]:
        import pickle

        import apache_beam as beam
        import fsspec

        items = list(items)
        if not items:
            return []
        folder = f"{job.workdir.rstrip('/')}/scan-results/{uuid.uuid4().hex}"
        fs, path = fsspec.core.url_to_fs(folder)
        fs.makedirs(path, exist_ok=True)
        options = _options(pipeline_options)
        pipeline = beam.Pipeline(runner=_runner(runner, options), options=options)
        (pipeline
         | "Sources" >> beam.Create(list(enumerate(items)))
         | "Reshuffle" >> beam.Reshuffle()
         | "Scan" >> beam.Map(_ScanTo(job, folder)))
        pipeline.run().wait_until_finish()
        try:
            out = []
            for pos in range(len(items)):
                with fsspec.open(f"{folder}/{pos}.pkl", "rb") as fh:
                    out.append(pickle.loads(fh.read()))
            return out
        finally:
            fs.rm(path, recursive=True)

    yield scan_map, run_options


def _runner(runner: Any, options: Any) -> Any:
    from apache_beam.options.pipeline_options import StandardOptions

    if runner is None and options.view_as(StandardOptions).runner is None:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return runner


def run(plan: Any, progress: bool = True,
        pipeline_options: Sequence[str] | Mapping[str, Any] | None = None,
        runner: Any = None, retries: int = 2, retry_delay: float = 1.0) -> list[Any]:
    """Run ``plan`` as a Beam pipeline and wait for it.

    ``runner`` is a runner object or name; by default the ``--runner`` of ``pipeline_options``,
    else the in-process ``FnApiRunner``.  Returns the store tasks' stats (when the finalize step
    ran elsewhere, totals rebuilt from the pipeline's metrics).  ``progress`` is not shown: Beam
    runners report progress in their own UI/logs.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions


    options = _options(pipeline_options)
    if runner is None and options.view_as(StandardOptions).runner is None:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        runner = FnApiRunner()
    token = uuid.uuid4().hex
    pipeline = beam.Pipeline(runner=runner, options=options)
    forked = plan.target.single_committer
    if forked:
        plan.prepare()
        (pipeline
         | "Tasks" >> beam.Create(list(plan.tasks))
         | "Reshuffle" >> beam.Reshuffle()
         | "Store" >> beam.Map(_Store(plan, retries, retry_delay, fork_of(plan)))
         | "CollectForks" >> beam.CombineGlobally(beam.combiners.ToListCombineFn())
         | "ToLauncher" >> beam.Map(_Collect(token)))
    else:
        build_pipeline(pipeline, plan, token, retries, retry_delay)
    result = pipeline.run()
    result.wait_until_finish()
    if forked:
        results = _RESULTS.pop(token, None)
        if results is None:
            raise EngineError(
                f"{plan.target}: an Icechunk build merges the workers' forks in this process, "
                "but this Beam runner ran the pipeline elsewhere; use the in-process runner, "
                "or the dask engine. Nothing was published."
            )
        plan.target.merge([f for _, f in results], checkpoint=True)
        stats = [s for s, _ in results]
        plan.finalize(stats)
        return stats
    collected = _RESULTS.pop(token, None)
    return collected if collected is not None else _stats_from_metrics(result, plan)


def _stats_from_metrics(result: Any, plan: Any) -> list[Any]:
    """Totals (as TaskStats) from the counters, for runners whose finalize ran remotely."""
    from apache_beam.metrics.metric import MetricsFilter

    from arcoforge.forge.bake import TaskStats

    totals: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    skipped = totals.get("tasks_skipped", 0)
    out = [TaskStats("beam:all-tasks", bytes_read=totals.get("bytes_read", 0),
                     bytes_written=totals.get("bytes_written", 0))]
    out += [TaskStats(f"beam:skipped-{i}", skipped=True) for i in range(skipped)]
    return out

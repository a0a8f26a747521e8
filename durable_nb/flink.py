"""Durable actions on Apache Flink: ``FlinkRunner``, ``durable_process`` for your own pipelines, a test cluster.

Importing this module imports PyFlink (``pip install 'durable_nb[flink]'``)::

    from durable_nb.flink import durable_process, environment

    env = environment(parallelism=2)                      # Python workers as processes, durable_nb shipped
    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), "orders.jsonl").build()
    lines = env.from_source(source, WatermarkStrategy.no_watermarks(), "orders")   # a source that rewinds
    orders = lines.map(json.loads, output_type=Types.PICKLED_BYTE_ARRAY())
    results = durable_process(orders, place_order, key="id", store="postgresql://db/journal")
    results.map(lambda row: row.result, output_type=...).sink_to(...)        # any sink
    env.execute("orders")

``durable_process`` puts a durable action into any DataStream: each element is
one run with the run id ``FlinkRunner`` and ``LocalRunner.map`` give it
(``action/key#seq``, ``seq`` counted per key in Flink keyed state), under the same
replay rules, and comes out as a :class:`MapRow` ``(key, run_id, status, result, error)``.
The source must rewind with the checkpoint (files, Kafka): after a failover PyFlink's
``from_collection`` sends every element again while keyed state keeps the counts of
those already processed, so they would come back as new runs; ``durable_process``
warns when it gets such a source (README, Flink).
"""

from __future__ import annotations

from typing import Any

from .runners.flink_cluster import StandaloneCluster
from .runners.flink_env import EnvOptions, FlinkJobError, FlinkSetupError, check_java, prepare
from .runners.flink_env import environment as _environment
from .runners.flink_job import FlinkRunner, durable_process
from .runners.rows import MapRow

__all__ = [
    "FlinkJobError", "FlinkRunner", "FlinkSetupError", "MapRow", "StandaloneCluster", "check_java",
    "durable_process", "environment", "prepare",
]


def environment(
    parallelism: int = 1,
    *,
    checkpoint_interval_ms: int = 500,
    jobmanager: str | None = None,
    restart_attempts: int = 3,
    restart_delay_ms: int = 500,
) -> Any:
    """A PyFlink ``StreamExecutionEnvironment`` ready for :func:`durable_process`.

    The same environment ``FlinkRunner`` builds: checkpointing on (the per-key
    sequence numbers that name runs are restored with the source position), a
    fixed-delay restart strategy, Python workers as separate processes started
    with this interpreter even on the local mini-cluster (a crashing action fails
    a task, not the notebook kernel), and ``durable_nb`` shipped to them.
    ``jobmanager="host:port"`` targets a running cluster's REST endpoint.
    """
    from .runners.flink_env import parse_jobmanager

    address = parse_jobmanager(jobmanager) if jobmanager else None
    env = _environment(EnvOptions(checkpoint_interval_ms, restart_attempts, restart_delay_ms, address=address))
    env.set_parallelism(parallelism)
    return env

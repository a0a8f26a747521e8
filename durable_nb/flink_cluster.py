"""Public home of the standalone-cluster helper: an alias of :mod:`durable_nb.runners.flink_cluster`.

Kept at this path for notebooks that import it; :mod:`durable_nb.flink` re-exports
``StandaloneCluster`` too.
"""

from .runners.flink_cluster import StandaloneCluster, flink_home

__all__ = ["StandaloneCluster", "flink_home"]

"""Public home of the standalone-cluster helper (kept at this path for notebooks that import it)."""

from .runners.flink_cluster import StandaloneCluster, flink_home

__all__ = ["StandaloneCluster", "flink_home"]

"""Partitions: which rank owns which gids.

This package holds the `Partition` map and the balancers that produce one. The
contiguous balancer is here now; the graph partitioner (METIS) follows with the
distributed engine.
"""

from dtb.partition.partition import Partition, contiguous

__all__ = ["Partition", "contiguous"]

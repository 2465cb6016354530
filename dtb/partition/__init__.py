"""Partitions: which rank owns which gids.

`Partition` maps gid ranges to ranks; `partition` makes one with a balancer
(METIS over population chunks, the DTB's greedy swaps, or contiguous ranges);
`quality` reports its balance and expected spike traffic without building anything.
"""

from dtb.partition.balance import STRATEGIES, partition
from dtb.partition.partition import Partition, contiguous
from dtb.partition.report import cross_node_lower_bound, quality

__all__ = ["Partition", "contiguous", "cross_node_lower_bound", "partition", "quality", "STRATEGIES"]

"""Scale-out on torch.distributed: the tensor-parallel group layers are built for, rank launch, workers."""

from maxcli.distributed.parallel_state import SINGLE, TensorParallelGroup, building_for, current_group

__all__ = ["SINGLE", "TensorParallelGroup", "building_for", "current_group"]

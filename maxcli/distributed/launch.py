"""Starting the ranks of a tensor-parallel model and running the non-zero ones.

Two ways in:
- spawned (default): the process that builds the model is rank 0; it starts ranks 1..N-1 as fresh
  `python -m maxcli.distributed.worker` processes (not multiprocessing: the user's own script is never
  re-imported), and all of them meet at a TCP store on 127.0.0.1 and build one c10d process group (gloo
  on CPU, NCCL on CUDA). Several such groups can live in one server (data-parallel
  replicas), each with its own store.
- torchrun (multi-node): every process runs the same `maxcli` command; `torch.distributed` is initialised
  from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and ranks > 0 become workers
  (`run_if_torchrun_worker`), never reaching the CLI's own work.

Every rank builds the same pipeline through the registry with `building_for(group)` active, so each layer
takes its shard. Rank 0 alone schedules: each step it broadcasts the model inputs (`StepBroadcast`) and all
ranks run the forward together. Build failures are agreed on (`agree`) so no rank waits forever for a
rank that died; a worker also dies with its parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import ctypes
import datetime
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from maxcli.distributed.parallel_state import TensorParallelGroup, building_for

if TYPE_CHECKING:
    from maxcli.config import PipelineConfig

logger = logging.getLogger("maxcli.distributed")

CONNECT_TIMEOUT = datetime.timedelta(minutes=10)  # ranks load weights before their first collective
SHUTDOWN = "shutdown"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(config: "PipelineConfig") -> str:
    return "nccl" if config.default_device_spec.device_type == "gpu" else "gloo"


def rank_config(config: "PipelineConfig", rank: int) -> "PipelineConfig":
    """Rank r's config: its own GPU (the r-th of --devices, else cuda:LOCAL_RANK/r); CPU ranks share 'cpu'."""
    from maxcli.driver import DeviceSpec

    specs = config.device_specs
    if specs[0].device_type == "cpu":
        return config
    if len(specs) >= config.tensor_parallel_size:
        spec = specs[rank]
    else:
        spec = DeviceSpec.accelerator(int(os.environ.get("LOCAL_RANK", rank)))
    return config.model_copy(update={"device_specs": [spec]})


def threads_per_rank(size: int) -> int:
    return max(1, (os.cpu_count() or 1) // size)


def connect(rank: int, size: int, host: str, port: int, backend: str) -> TensorParallelGroup:
    """Rank `rank` of a new group: meet at the TCP store host:port (rank 0 hosts it), build the backend."""
    import torch.distributed as dist

    store = dist.TCPStore(host, port, size, rank == 0, timeout=CONNECT_TIMEOUT)
    if backend == "nccl":
        return TensorParallelGroup(rank, size, dist.ProcessGroupNCCL(store, rank, size), f"cuda:{torch.cuda.current_device()}")
    return TensorParallelGroup(rank, size, dist.ProcessGroupGloo(store, rank, size, CONNECT_TIMEOUT))


def torchrun_rank() -> int | None:
    """This process's rank when torchrun (or another launcher setting WORLD_SIZE > 1) started it."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
        return int(os.environ["RANK"])
    return None


def torchrun_group(config: "PipelineConfig") -> TensorParallelGroup:
    import torch.distributed as dist

    world = int(os.environ["WORLD_SIZE"])
    if world != config.tensor_parallel_size:
        raise ValueError(
            f"torchrun started {world} processes but --tensor-parallel-size is {config.tensor_parallel_size}; they must match"
        )
    if not dist.is_initialized():
        if backend_for(config) == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend_for(config), timeout=CONNECT_TIMEOUT)
    device = f"cuda:{torch.cuda.current_device()}" if backend_for(config) == "nccl" else "cpu"
    return TensorParallelGroup(dist.get_rank(), world, dist.distributed_c10d._get_default_group(), device)


def agree(group: TensorParallelGroup, ok: bool) -> bool:
    """True on every rank iff `ok` on every rank (one all-reduce)."""
    flag = torch.tensor([0.0 if ok else 1.0], device=group.device)
    return float(group.all_reduce(flag)[0]) == 0.0


def build_rank(config: "PipelineConfig", group: TensorParallelGroup) -> tuple[Any, Any]:
    """(tokenizer, pipeline) of this rank; every rank learns whether all of them succeeded."""
    from maxcli.interfaces import PipelineTask
    from maxcli.pipelines.lib.registry import PIPELINE_REGISTRY

    error: BaseException | None = None
    built: tuple[Any, Any] | None = None
    try:
        with building_for(group):
            built = PIPELINE_REGISTRY.retrieve(rank_config(config, group.rank), task=PipelineTask.TEXT_GENERATION)
    except Exception as exc:  # noqa: BLE001 - reported once all ranks have answered
        error = exc
    if not agree(group, error is None):
        if error is not None:
            raise error
        raise RuntimeError("tensor parallel: another rank failed to load the model (see its log)")
    assert built is not None
    return built


def serve_steps(pipeline: Any, group: TensorParallelGroup) -> None:
    """A worker's life after loading: run every forward rank 0 broadcasts until it says SHUTDOWN."""
    model = pipeline.pipeline_model
    while True:
        message = group.broadcast_object(None)
        if message == SHUTDOWN:
            return
        model.receive_step(message)


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def worker_main(config: "PipelineConfig", rank: int, size: int, port: int) -> None:
    """A spawned rank's life (maxcli.distributed.worker reads its arguments from stdin)."""
    from maxcli.pipelines.lib.custom import prepare_config

    _die_with_parent()
    torch.set_num_threads(threads_per_rank(size))
    if backend_for(config) == "nccl":
        torch.cuda.set_device(rank_config(config, rank).device)
    group = connect(rank, size, "127.0.0.1", port, backend_for(config))
    config = prepare_config(config)  # a fresh process: register the custom architectures again
    try:
        _, pipeline = build_rank(config, group)
    except Exception as exc:  # noqa: BLE001 - rank 0 reports the failure to the user
        logger.error("tensor-parallel rank %d failed to load: %s", rank, exc)
        return
    serve_steps(pipeline, group)


@dataclass
class TensorParallelRuntime:
    """Rank 0's handle on its group: the spawned worker processes, and an orderly shutdown."""

    group: TensorParallelGroup
    processes: list[Any] = field(default_factory=list)
    closed: bool = False

    def shutdown(self, timeout: float = 30.0) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.group.broadcast_object(SHUTDOWN)
            if not self.processes:
                _leave_torchrun_group()
        except Exception:  # noqa: BLE001 - a dead worker: terminate below
            pass
        _reap(self.processes, timeout)


def _leave_torchrun_group() -> None:
    """Every rank meets once more, then tears the default group down: a rank must not exit while a peer
    still holds connections to it (gloo aborts the process then)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _reap(processes: list[Any], timeout: float) -> None:
    for p in processes:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.terminate()


def start_tensor_parallel(config: "PipelineConfig") -> tuple[Any, Any]:
    """Rank 0's (tokenizer, pipeline) of a tensor-parallel model, its other ranks started and loaded."""
    size = config.tensor_parallel_size
    processes: list[Any] = []
    if torchrun_rank() is not None:
        group = torchrun_group(config)
    else:
        port = _free_port()
        for rank in range(1, size):
            p = subprocess.Popen([sys.executable, "-m", "maxcli.distributed.worker"], stdin=subprocess.PIPE)
            assert p.stdin is not None
            p.stdin.write(pickle.dumps((config, rank, size, port)))
            p.stdin.close()
            processes.append(p)
        torch.set_num_threads(threads_per_rank(size))
        if backend_for(config) == "nccl":
            torch.cuda.set_device(rank_config(config, 0).device)
        group = connect(0, size, "127.0.0.1", port, backend_for(config))
    runtime = TensorParallelRuntime(group, processes)
    try:
        tokenizer, pipeline = build_rank(config, group)
    except BaseException:
        _reap(processes, 5.0)
        raise
    pipeline.pipeline_model.tp_runtime = runtime
    atexit.register(runtime.shutdown)
    logger.info("tensor parallel: %d ranks (%s)", size, "torchrun" if not processes else "spawned")
    return tokenizer, pipeline


def run_if_torchrun_worker(config: "PipelineConfig") -> None:
    """Under torchrun, ranks > 0 load their shard, serve rank 0's steps, then exit the process (status 0)."""
    rank = torchrun_rank()
    if rank is None or rank == 0 or config.tensor_parallel_size <= 1:
        return
    from maxcli.pipelines.lib.custom import prepare_config

    config = prepare_config(config)
    torch.set_num_threads(threads_per_rank(int(os.environ.get("LOCAL_WORLD_SIZE", config.tensor_parallel_size))))
    group = torchrun_group(config)
    _, pipeline = build_rank(config, group)
    serve_steps(pipeline, group)
    _leave_torchrun_group()
    raise SystemExit(0)

"""Process-group setup for the DeepSpeed engine, with or without a launcher.

Under ``deepspeed``/``torchrun`` the launcher sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT. A plain ``python``/``dit-video`` run sets them here for one process (and a free
port), or DeepSpeed falls back to MPI discovery and fails without mpi4py.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_distributed(timeout_minutes: float = 30.0) -> tuple[int, int]:
    """Initialise torch.distributed through DeepSpeed once; returns (rank, world_size).

    ``timeout_minutes`` (``train.comm_timeout_minutes``): how long a collective may wait for a missing rank
    before the job fails (NCCL's watchdog, gloo's timeout) instead of hanging.
    """
    from datetime import timedelta

    import deepspeed
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ["MASTER_PORT"] = os.environ.get("MASTER_PORT") or str(free_port())
    os.environ.setdefault("LOCAL_RANK", "0")
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    from deepspeed.utils import logger as ds_logger

    ds_logger.setLevel(logging.WARNING)
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        deepspeed.init_distributed(dist_backend=backend, timeout=timedelta(minutes=timeout_minutes))
    return dist.get_rank(), dist.get_world_size()


def device() -> torch.device:  # noqa: F821 - torch imported lazily
    import torch

    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def auto_threads() -> int:
    """CPU threads for torch: all cores on an idle machine, 1 when the load average already fills the cores
    (OpenMP worker threads that wait for descheduled siblings make each op many times slower)."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cores
    return 1 if load >= cores - 0.5 else cores


def set_threads(threads: int | None) -> int:
    """Apply ``train.threads`` (None: leave torch's default; 0: :func:`auto_threads`); returns the count in use."""
    import torch

    if threads is not None:
        torch.set_num_threads(auto_threads() if threads == 0 else threads)
    return torch.get_num_threads()


def all_reduce_sum(t):
    """``t`` summed over all ranks (a copy; ``t`` itself when there is one process). gloo and NCCL."""
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return t
    import torch

    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    out = t.to(dev).clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(t.device)

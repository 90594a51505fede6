"""Several processes under ``torchrun``: the process group, who this process is, and the few collectives the
toolkit needs (shard a sequence, gather the shards back in order, broadcast an object).

    torchrun --nproc_per_node=2 -m benchmarks.run --config smoke

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`init` joins its process group only when
``WORLD_SIZE > 1`` (nccl for a CUDA device, which becomes ``cuda:LOCAL_RANK``; gloo on the CPU). In one
process nothing here creates a process group or communicates: every helper returns its input or does
nothing, so single-process code paths stay exactly as they were.

Sharding is always by position: item ``i`` of a sequence belongs to rank ``i mod world``
(:func:`shard`), and :func:`gather_shards` puts every rank's items back at their positions, so a gathered
result is laid out as one process would have computed it.

Every function that communicates is *collective*: each rank must call it, in the same order. A rank that
fails takes the job down: torchrun stops the other workers as soon as one exits with an error, and every
wait is bounded by the process group's timeout (``FEWSHOT_DIST_TIMEOUT`` seconds, default 1800).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from fewshot.utils.errors import UserError

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 1800.0


def launched() -> bool:
    """Whether this process was started as one of several by torchrun (``WORLD_SIZE > 1``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """Whether a process group of more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``); 0 in one process."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes results and logs."""
    return rank() == 0


def is_local_main() -> bool:
    """The first process of its machine: the one that writes machine-local caches."""
    return local_rank() == 0


def backend() -> str | None:
    """"gloo", "nccl" or None (one process)."""
    return str(dist.get_backend()) if is_distributed() else None


def describe() -> dict[str, Any]:
    """What ``run.json`` records: {"world_size": N, "backend": "gloo" | "nccl" | None}."""
    return {"world_size": world_size(), "backend": backend()}


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group when launched so, and return the device this process computes on.

    ``device``: the run's resolved device. CUDA -> backend nccl and device ``cuda:LOCAL_RANK`` (also made
    the current device, so ``"cuda"`` and ``"auto"`` mean it everywhere); CPU -> gloo. One process, or a
    group already initialised: returns ``device`` and does nothing else."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return device
    if not dist.is_available():
        raise UserError("WORLD_SIZE > 1 (a torchrun launch) but this torch build has no torch.distributed")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    timeout = timedelta(seconds=float(os.environ.get("FEWSHOT_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
    if device.type == "cuda":
        if device.index not in (None, local):
            raise UserError(f"--device {device}: under torchrun every process uses cuda:LOCAL_RANK; "
                            "pass --device cuda (or auto) and choose the GPUs with CUDA_VISIBLE_DEVICES")
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local} but this machine shows {torch.cuda.device_count()} GPU(s); "
                            "start at most that many processes per node (--nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    elif device.type == "cpu":
        dist.init_process_group("gloo", timeout=timeout)
    else:
        raise UserError(f"device {device}: multi-process training supports cpu (gloo) and cuda (nccl)")
    return device


def shutdown(wait: bool = True) -> None:
    """Leave the process group; with ``wait`` after a last barrier, so that no rank tears it down while
    another still writes (after a failure pass False: the other ranks may never get there)."""
    if dist.is_available() and dist.is_initialized():
        if wait and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard(items: Sequence[T] | torch.Tensor, *, of: int | None = None, at: int | None = None) -> Any:
    """This rank's items of ``items``: positions ``rank, rank + world, ...`` (a slice, same type).
    ``of``/``at``: another world size / rank than this process's (tests, planning)."""
    world = world_size() if of is None else of
    return items[(rank() if at is None else at)::world]


def _comm_device(like: torch.Tensor) -> torch.device:
    # nccl moves only CUDA tensors; gloo only CPU ones (CUDA tensors too, but through the host anyway).
    return torch.device("cuda", torch.cuda.current_device()) if backend() == "nccl" else torch.device("cpu")


def gather_shards(local: torch.Tensor, n: int) -> torch.Tensor:
    """Every rank's :func:`shard` of an ``n``-item result, put back in order on every rank.

    local: [ceil((n - rank) / world), ...] (this rank's items; the trailing shape and dtype must be the
    same on every rank) -> [n, ...] on ``local``'s device. One process: ``local`` itself."""
    if not is_distributed():
        return local
    world = world_size()
    rows = -(-n // world)  # the largest shard
    if local.shape[0] != len(range(rank(), n, world)):
        raise ValueError(f"rank {rank()} holds {local.shape[0]} rows of {n}, expected its shard's "
                         f"{len(range(rank(), n, world))}")
    dtype = local.dtype
    wire = local.to(torch.uint8) if dtype == torch.bool else local  # gloo reduces no bools
    padded = wire.new_zeros((rows, *local.shape[1:]), device=_comm_device(local))
    padded[: local.shape[0]] = wire
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    # Row j of rank r is item j * world + r: stacking ranks second interleaves them back; the padding
    # rows (items >= n) all land at the end.
    full = torch.stack(parts, dim=1).reshape(rows * world, *local.shape[1:])[:n]
    return full.to(local.device, dtype)


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` as rank ``src`` has it, on every rank (picklable objects; one process: ``obj``)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (one process: ``flag``)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_comm_device(torch.empty(0)))
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over the ranks (a new tensor on ``t``'s device; one process: ``t``)."""
    if not is_distributed():
        return t
    wire = t.detach().to(_comm_device(t), copy=True)
    dist.all_reduce(wire)
    return wire.to(t.device)


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` run by rank 0 alone, its result broadcast to every rank. A :class:`UserError` on rank 0 is
    raised on every rank (each exits 2 with the same line instead of waiting for rank 0); one process:
    ``fn()``."""
    if not is_distributed():
        return fn()
    outcome: tuple[str, Any] = ("", None)
    if is_main():
        try:
            outcome = ("ok", fn())
        except UserError as err:
            outcome = ("user error", str(err))
            broadcast_object(outcome)
            raise
    outcome = broadcast_object(outcome)
    if outcome[0] == "user error":
        raise UserError(outcome[1])
    return outcome[1]


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. building a cache the others then read), then the first process
    of every other machine (machine-local caches), then the rest. One process: just the block."""
    if not is_distributed():
        yield
        return
    turn = 0 if is_main() else 1 if is_local_main() else 2
    for step in range(3):
        if step == turn:
            yield
        dist.barrier()

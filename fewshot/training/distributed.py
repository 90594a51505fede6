"""What :func:`fewshot.training.loop.fit` adds under torchrun: DistributedDataParallel around the
objective's loss, batch norm over the global batch, and a differentiable gather of per-rank rows.

How a step is split (``world`` processes, rank ``r``): every rank draws the *same* global batch from the
same seeded generator (the batch order, the augmentation's random numbers, the episode or task indices),
keeps its shard (item ``i`` on rank ``i mod world``) and computes that shard's *share* of the global
batch's loss: the shares sum to the loss one process computes on the whole batch (a class-weighted mean
divides by the whole batch's weight sum, not the shard's). The trainer backpropagates ``world * share``;
DDP averages the gradients over the ranks, so every rank steps with the single-process gradient of the
global batch, up to floating-point reduction order.

Batch norm: its statistics must be those of the global batch too, or the result would depend on the
number of processes. On CUDA the BatchNorm layers become :class:`torch.nn.SyncBatchNorm` for the
duration of :func:`fit`; on the CPU, where ``SyncBatchNorm`` refuses to run (torch 2.14: "expected input
tensor to be on GPU"), :class:`GlobalBatchNorm` does the same with gloo: the per-channel mean and variance
are all-reduced (differentiably) over the ranks. Either way the swapped layers share their parameters and
buffers with the originals, and the originals are put back when training ends, so checkpoints and the
caller's model are unchanged in type and keys.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from fewshot.utils import distributed


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; its gradient is the sum of the ranks' gradients (every rank's loss depends on
    the sum)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce_sum(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce_sum(grad.contiguous())


class _GatherShards(torch.autograd.Function):
    """:func:`fewshot.utils.distributed.gather_shards` with a gradient: each rank gets the sum over the
    ranks of the gradient of its own rows."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, n: int) -> torch.Tensor:
        ctx.n = n
        return distributed.gather_shards(local, n)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        total = distributed.all_reduce_sum(grad.contiguous())
        return distributed.shard(total), None


def gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """Every rank's shard of ``n`` rows ([ceil((n - rank) / world), ...] here), in order on every rank:
    [n, ...], differentiable (one process: ``local``)."""
    if not distributed.is_distributed():
        return local
    return _GatherShards.apply(local, n)


class GlobalBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of the batch summed over every rank: what
    :class:`torch.nn.SyncBatchNorm` does on CUDA, for the CPU (gloo). Evaluation mode is plain batch norm.

    The mean and the variance are computed in two all-reduced passes (sums in float64: a variance from
    E[x^2] - E[x]^2 would lose digits), so they equal one process's statistics of the global batch to the
    rounding of the input's precision (float32 at least; a float64 model's in float64); the running
    statistics follow ``nn.BatchNorm``'s update rule (unbiased variance, ``momentum=None`` is the
    cumulative average)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input [N, C, ...], got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training or self.running_mean is None) or not distributed.is_distributed():
            return super().forward(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        dims = [0, *range(2, x.dim())]
        view = [1, -1] + [1] * (x.dim() - 2)
        # Statistics in float32 at least, as torch's batch norm under autocast; a float64 input stays float64.
        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
        local_count = xf.new_full((1,), xf.numel() // xf.shape[1], dtype=torch.float64)
        sums = _AllReduceSum.apply(torch.cat([xf.sum(dims, dtype=torch.float64), local_count]))
        count = sums[-1].detach()
        mean = sums[:-1] / count
        centred = xf - mean.to(xf.dtype).view(view)
        var = _AllReduceSum.apply(centred.square().sum(dims, dtype=torch.float64)) / count
        y = centred * torch.rsqrt(var + self.eps).to(xf.dtype).view(view)
        if self.affine:
            y = y * self.weight.view(view) + self.bias.view(view)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                unbiased = var.detach() * (count / (count - 1).clamp(min=1))
                self.running_mean.mul_(1 - factor).add_(mean.detach().to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        return y.to(x.dtype)


def _global_batchnorm(bn: _BatchNorm, device: torch.device) -> nn.Module:
    """A synchronised twin of ``bn`` sharing its parameters and buffers (the same tensors)."""
    if device.type == "cuda":
        twin: nn.Module = nn.SyncBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    else:
        twin = GlobalBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    twin._parameters = bn._parameters  # the very same dicts: updates land in the original's tensors
    twin._buffers = bn._buffers
    twin.train(bn.training)
    return twin


@contextlib.contextmanager
def synchronized_batchnorm(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """Inside the block every BatchNorm layer of ``model`` computes its training statistics over the
    global batch (see the module docstring); the original layers are back afterwards."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BatchNorm) and not isinstance(child, (nn.SyncBatchNorm, GlobalBatchNorm)):
                swapped.append((parent, name, child))
                setattr(parent, name, _global_batchnorm(child, device))
    try:
        yield model
    finally:
        for parent, name, original in reversed(swapped):
            original.train(getattr(parent, name).training)
            setattr(parent, name, original)


class _LossModule(nn.Module):
    """The objective's loss as a module's forward: DDP must run the forward to hook the backward, and
    the objectives call other methods than ``forward`` (``embed``, ``query_loss``)."""

    def __init__(self, model: nn.Module, loss: Callable[[nn.Module, Any], Any]) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: Any) -> Any:
        return self.loss(self.model, batch)


@contextlib.contextmanager
def data_parallel(model: nn.Module, loss: Callable[[nn.Module, Any], Any],
                  device: torch.device) -> Iterator[Callable[[Any], Any]]:
    """Yields ``step_loss(batch)``: ``loss(model, batch)``, in one process exactly that; under torchrun
    computed through DistributedDataParallel (gradients averaged over the ranks in backward) with batch
    norm over the global batch. The model's own parameters and buffers are used throughout."""
    if not distributed.is_distributed():
        yield lambda batch: loss(model, batch)
        return
    with synchronized_batchnorm(model, device):
        ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        ddp = DistributedDataParallel(_LossModule(model, loss), device_ids=ids)
        try:
            yield ddp
        finally:
            # The reducer's hooks on the parameters would outlive fit and fire in a later backward.
            remove = getattr(ddp, "_remove_autograd_hooks", None)
            if remove is not None:
                remove()


def reduce_step(loss: torch.Tensor, correct: torch.Tensor | int, n: int) -> torch.Tensor:
    """[global loss, correct predictions, predictions] of one step, summed over the ranks (float64 on the
    loss's device): the ranks' loss shares add up to the global batch's loss."""
    stats = torch.stack([loss.detach().double(), torch.as_tensor(correct, device=loss.device).double(),
                         torch.tensor(float(n), dtype=torch.float64, device=loss.device)])
    return distributed.all_reduce_sum(stats)

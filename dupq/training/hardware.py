"""Where training runs: the data-parallel process group, accelerators and native bf16."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def process_group() -> tuple[int, int, int]:
    """(rank, local rank, world size) of this process: (0, 0, 1) unless a ``torch.distributed`` process group is
    up (``dupq train --nproc N``: :mod:`dupq.training.distributed` starts one per rank before calling :func:`train`)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_node_local_rank(fallback_rank=0), dist.get_world_size()
    return 0, 0, 1


def on_rank0(world: int, rank: int, compute: Callable[[], Any]) -> Any:
    """``compute()`` on rank 0 only, its result sent to every rank (data-parallel): data that is prepared once,
    so every rank trains on the same pairs in the same order (the samplers are seeded alike)."""
    if world == 1:
        return compute()
    import torch.distributed as dist

    box = [compute() if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def bf16_supported() -> bool:
    """Whether bf16 autocast runs natively (AVX512-BF16/AMX on a CPU); emulated bf16 is slower than fp32."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False

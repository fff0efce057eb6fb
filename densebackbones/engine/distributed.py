"""torch.distributed helpers: torchrun environment, rank-0 writes, exact metric reduction."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from .elastic import restart_count

__all__ = [
    "AMP_DTYPES",
    "DistInfo",
    "ShardSampler",
    "all_gather_objects",
    "all_reduce_sum",
    "amp_dtype",
    "distributed_session",
    "init_distributed",
    "is_main_process",
    "resolve_device",
]

AMP_DTYPES = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str | None = "auto", local_rank: int = 0, option: str = "train.device") -> torch.device:
    """The device a run uses: ``'auto'`` (``cuda:LOCAL_RANK`` when CUDA is available, else the CPU), ``'cpu'``,
    ``'cuda'`` (``cuda:LOCAL_RANK``) or ``'cuda:N'``. Raises ``ValueError`` naming the fix where CUDA is asked for
    but missing, before anything is built or loaded (``option``: the setting's name in the message)."""
    device = "auto" if device is None else str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch_device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"{option}={device!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if torch_device.type not in ("cpu", "cuda"):
        raise ValueError(f"{option}={device!r}: only 'auto', 'cpu', 'cuda' and 'cuda:N' are supported")
    if torch_device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{option}={device!r} but CUDA is not available (torch {torch.__version__}, built for CUDA "
                f"{torch.version.cuda or 'none'}); use {option}=cpu (or auto), or install a CUDA build of torch"
            )
        index = local_rank if torch_device.index is None else torch_device.index
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"{option}={device!r} (local rank {local_rank}) but only {torch.cuda.device_count()} CUDA "
                f"device(s) are visible; launch at most that many processes per node or check CUDA_VISIBLE_DEVICES"
            )
        torch_device = torch.device("cuda", index)
    return torch_device


def amp_dtype(amp: str | None, device: torch.device, option: str = "train.amp") -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` (None, 'bf16' or 'fp16') on ``device``; ``ValueError`` naming the fix
    for an unknown value or a GPU without bfloat16 (before Ampere)."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"{option} must be None, 'bf16' or 'fp16', got {amp!r}")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ValueError(
            f"{option}=bf16 but {torch.cuda.get_device_name(device)} has no bfloat16 support; use {option}=fp16 "
            f"(with its gradient scaler) or none"
        )
    return AMP_DTYPES[amp]


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the process group from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK), else single process.

    ``device``: see :func:`resolve_device`; CUDA runs use backend nccl, CPU runs gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch_device = resolve_device(device, local_rank)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        # torchrun restarts a failed group on the agent's store, which still holds the previous attempt's keys
        # (gloo's and nccl's addresses of the dead workers): a group created on them connected to a dead worker's
        # port ("Connection refused") or hung, and the launch ended instead of restarting (18 of 24 restarts on a
        # loaded 2-core machine). Each attempt's group lives under its own key prefix (TORCHELASTIC_RESTART_COUNT).
        store, rank, world_size = next(dist.rendezvous("env://", rank, world_size))
        dist.init_process_group(
            backend="nccl" if torch_device.type == "cuda" else "gloo",
            store=dist.PrefixStore(f"densebackbones/attempt_{restart_count()}/", store),
            rank=rank,
            world_size=world_size,
        )
    return DistInfo(rank, world_size, local_rank, torch_device)


@contextlib.contextmanager
def distributed_session(device: str = "auto") -> Iterator[DistInfo]:
    """:func:`init_distributed` for the length of a ``with`` block, and the process group torn down at its end.

    A run that ends normally meets every rank at a barrier and then destroys every group: a rank that simply exits
    while another still holds gloo connections (rank 0 exporting weights) can abort in the C++ destructors
    ("terminate called without an active exception", SIGABRT, seen under load on a 2-core CI machine), and torchrun
    then reports the finished run as failed. A run that raises destroys its groups without the barrier, which the
    failed rank's peers might never reach."""
    info = init_distributed(device)
    try:
        yield info
    except BaseException:
        shutdown_distributed(wait_for_peers=False)
        raise
    shutdown_distributed(wait_for_peers=True)


def shutdown_distributed(wait_for_peers: bool = True) -> None:
    """Destroy every process group (after a barrier with ``wait_for_peers``); nothing without one."""
    if not dist.is_initialized():
        return
    if wait_for_peers:
        dist.barrier()
    dist.destroy_process_group()


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: object) -> list[object]:
    if not dist.is_initialized():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank r takes indices r, r + W, r + 2W ... without padding, so summed counts are exact
    (``DistributedSampler`` repeats samples to even out the shards)."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

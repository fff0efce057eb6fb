"""Dense blocks computed in one pre-allocated feature buffer, with or without recomputation in backward.

Which route a block takes on a call (plain concatenation, this buffer, or this buffer with recomputation) is
decided in ``routes.py``, with its table; this module carries the buffer routes out.

The shared buffer and the recomputation are eager Python (an autograd Function, views re-pointed at one storage,
``torch.utils.checkpoint``), which no tracer or compiler can express, and which hide the layers from module hooks,
parametrizations and ``torch.func``: there the blocks take the plain route (``routes.py``). A traced, scripted or
compiled model computes in the input's memory layout (``compute_layout`` is the identity there, but for torch.fx,
see ``set_cpu_channels_last``) and keeps the plain route's activation memory in training.

A naive dense block (``memory_mode='plain'``, what torchvision and timm do) concatenates all earlier maps anew for
every layer and stores that concatenation and its BN and ReLU outputs for backward, so memory and copies grow
quadratically with depth (Pleiss et al., "Memory-Efficient Implementation of DenseNets", 2017). Here:

* every layer reads the first ``c_in`` channels of one buffer of the block's final width and writes its ``k`` new
  maps right after them, so nothing is concatenated and the block's output *is* the buffer;
* with ``nn.BatchNorm2d`` + ``nn.ReLU`` entries (every DenseNet here) the batch statistics of a channel are computed
  once, when the channel is written: every later layer's BN sees the same channel over the same batch, so its mean
  and variance are the same numbers. A layer's BN-ReLU is then one per-channel affine map and a ReLU, and in backward
  the layers' gradients w.r.t. the normalised maps are summed and sent through the normalisation once per channel
  (BN backward is linear in its output gradient). Running statistics are updated once per layer and step, exactly
  as ``nn.BatchNorm2d`` does;
* ``memory_mode='buffer'`` (default) keeps each layer's activations from the output of its first convolution on
  and recomputes the entry BN-ReLU (an elementwise pass) in backward, as Pleiss et al. do with their shared
  storage, so what it holds grows linearly with depth besides the buffer;
  ``memory_mode='efficient'`` keeps only the buffer and recomputes each layer's BN-ReLU and convolutions in backward
  (optMemory 4 of the official Torch code; running statistics are not updated by the recomputation, and dropout
  draws the same masks). The recomputation stops at the input of a layer's last convolution, whose backward needs
  only that input, so the 3x3 convolution is not run twice.

Other norm or activation layers (GroupNorm, SyncBatchNorm, post-activation layers...) take a generic route: the
layer's own modules run on a view of the buffer.

This module knows blocks and layers only through the protocols below: :class:`SharedBufferBlock` (``dense.py``'s
``DenseBlock``), :class:`SharedBufferLayer` (every layer; ``two_way.py``'s and ``condense.py``'s take the generic
route) and :class:`PreActivationLayer` (``dense.py``'s ``DenseLayer``, the fast route). ``dense.py`` imports this
module, not the other way round.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn as nn
from timm.layers import DropPath
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .routes import (
    block_route,
    functorch_active,
    is_fx_symbolic_tracing,
    is_traced,
    plain_conv,
    recomputing,
    shares_batch_norm,
)

__all__ = [
    "PreActivationLayer",
    "SharedBufferBlock",
    "SharedBufferLayer",
    "compute_layout",
    "concatenating_forward",
    "dense_block_forward",
    "recompute_in_backward",
    "set_cpu_channels_last",
]

_STAT_NAMES = ("running_mean", "running_var", "num_batches_tracked")


@runtime_checkable
class SharedBufferLayer(Protocol):
    """What any dense layer offers the shared buffer (the generic route): called on a view of the buffer's first
    channels (the block input and every earlier layer's maps), it returns its ``growth_rate`` new maps, which the
    buffer stores after them. PeleeNet's two-way and CondenseNet's layers are such layers. ``output_channels()``: the
    maps it writes as its modules stand now; a layer that no longer writes ``growth_rate`` maps (pruned) sends its
    block down the plain route (``routes.py``)."""

    def forward(self, x: Tensor) -> Tensor: ...

    def output_channels(self) -> int: ...


@runtime_checkable
class PreActivationLayer(SharedBufferLayer, Protocol):
    """A layer the buffer can take apart (the fast route): with ``preact`` True (BN-ReLU-conv order) and a plain
    ``nn.BatchNorm2d`` + ``nn.ReLU`` entry ``norm1``/``act1``, the entry's statistics are shared across the block's
    layers and its backward is run once per channel (see above). ``conv1``, ``conv2`` (or None), ``drop2``,
    ``drop_path``: the first and last convolutions, the dropout after the last one and the stochastic depth on the
    output (the recomputation stops at ``conv2``'s input when both are an Identity). DenseNet's, DSOD's and
    FC-DenseNet's layers are such layers."""

    preact: bool
    norm1: nn.Module
    act1: nn.Module
    conv1: nn.Module
    conv2: nn.Module | None
    drop2: nn.Module
    drop_path: nn.Module
    training: bool

    def rest(self, z: Tensor) -> Tensor:
        """Everything after the entry BN-ReLU (pre-activation) or the whole layer (post-activation): the layer's
        ``growth_rate`` new maps."""

    def after_first_conv(self, h: Tensor) -> Tensor:
        """A pre-activation layer from the output of ``conv1`` to its end."""

    def last_conv_input(self, z: Tensor) -> Tensor:
        """A pre-activation bottleneck layer from after its entry BN-ReLU up to the input of ``conv2``."""

    def rest_parameters(self) -> list[nn.Parameter]:
        """The parameters :meth:`rest` uses when the entry is pre-activation (all but ``norm1``'s)."""


@runtime_checkable
class SharedBufferBlock(Protocol):
    """What a dense block offers the shared buffer: an ``nn.Module`` whose children are its
    :class:`SharedBufferLayer` s in order, each adding ``growth_rate`` maps to everything before it.

    ``memory_mode``: ``'plain'``, ``'buffer'`` or ``'efficient'`` (the route table above); ``concat_input``: whether
    the block's output starts with its input (DenseNet) or holds only the new maps (FC-DenseNet's up path);
    ``cpu_channels_last``: whether the buffer is channels_last on the CPU whatever the input's layout
    (:func:`set_cpu_channels_last`)."""

    memory_mode: str
    growth_rate: int
    concat_input: bool
    cpu_channels_last: bool

    def children(self) -> Iterator[nn.Module]: ...


def _alias(buffer: Tensor, channels: int) -> Tensor:
    """The first ``channels`` channels of ``buffer`` as a tensor with its own autograd version counter.

    A layer only writes channels that no earlier layer has read, so the version check autograd would run on the
    whole buffer (and fail after every write) does not apply to what a layer saved."""
    view = buffer.new_empty(0)
    size = (buffer.shape[0], channels, *buffer.shape[2:])
    return view.set_(buffer.untyped_storage(), buffer.storage_offset(), size, buffer.stride())


def set_cpu_channels_last(module: nn.Module, enabled: bool) -> None:
    """Whether the dense blocks of ``module`` (a model, or a block) compute in channels_last on the CPU whatever
    their input's layout, in the ``'buffer'`` and ``'efficient'`` modes (a block's ``cpu_channels_last``, default
    True). A setting of the model, not of the process: two models in one process can differ.

    oneDNN's CPU convolutions are faster on channels_last tensors than on contiguous (NCHW) ones, and the 1x1
    bottleneck and transition convolutions of a DenseNet are most of its step (docs/benchmarks.md, "Memory
    format"). With the setting on, the model converts an NCHW input to channels_last before its stem and returns
    channels_last tensors: the values are the same, only the strides differ (call ``.contiguous()`` where NCHW
    strides are needed). It applies to float32/bfloat16/float16 inputs of blocks with BatchNorm-ReLU entries;
    CUDA tensors, float64 and other norm layers keep the input's layout. An FX-traced graph makes the same choice
    when it runs (``cpu_channels_last_input``), so it computes what the eager model computes."""
    for block in module.modules():
        if hasattr(block, "cpu_channels_last"):
            block.cpu_channels_last = bool(enabled)


def _memory_format(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def compute_layout(x: Tensor, block: SharedBufferBlock) -> Tensor:
    """``x`` in the layout ``block`` (a :class:`~densebackbones.layers.DenseBlock`) will compute in: a model calls
    this on its input so that the layers before the first block (the stem) run in that layout too, instead of the
    block converting their output. A no-op unless the block computes in channels_last on the CPU while ``x`` is
    NCHW (see ``set_cpu_channels_last``), and under jit.trace, export and ``torch.compile``. Under torch.fx the
    graph records a call of ``cpu_channels_last_input``, which decides when the graph runs (the input's device is
    unknown while tracing), so that a traced model computes in the eager model's layout and gives its values."""
    forced = block.memory_mode != "plain" and block.cpu_channels_last and shares_batch_norm(list(block.children()))
    if is_fx_symbolic_tracing():
        return cpu_channels_last_input(x, forced)
    if is_traced() or not forced or block_route(block, x) == "concat":  # the plain route keeps the input's layout
        return x
    return cpu_channels_last_input(x, forced)


def cpu_channels_last_input(x: Tensor, forced: bool) -> Tensor:
    """``x`` as channels_last when ``forced`` and it is a 4-D float32/bfloat16/float16 CPU tensor (the blocks'
    channels_last buffers, see ``set_cpu_channels_last``), else ``x``. A leaf of torch.fx graphs (``torch.fx.wrap``):
    its branches on the device and dtype run with the real input."""
    # TorchScript compiles this when it scripts an FX graph (timm's fx-torchscript test): no helper calls here.
    if not forced or x.dim() != 4 or x.device.type != "cpu":
        return x
    if x.dtype != torch.float32 and x.dtype != torch.bfloat16 and x.dtype != torch.float16:
        return x
    return x.contiguous(memory_format=torch.channels_last)  # a no-op on a channels_last input


torch.fx.wrap("cpu_channels_last_input")


def _buffer_format(x: Tensor, shared_bn: bool, cpu_channels_last: bool) -> torch.memory_format:
    """Layout of a block's buffer: the input's, or channels_last on the CPU (see ``set_cpu_channels_last``)."""
    if (
        cpu_channels_last
        and shared_bn
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
    ):
        return torch.channels_last
    return _memory_format(x)


class _running_stats_kept:  # noqa: N801 (used as a context manager, like the function it was)
    """Undo whatever a recomputation does to the running statistics of ``module``'s norm layers. Reusable:
    ``torch.utils.checkpoint`` enters its recomputation context once per recomputation (a retained graph's second
    backward, double backward), where a generator-based context manager would fail on the second entry."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.saved: list[list[tuple[Tensor, Tensor]]] = []

    def __enter__(self) -> None:
        self.saved.append(
            [
                (buf, buf.clone())
                for m in self.module.modules()
                if isinstance(m, nn.modules.batchnorm._NormBase)
                for name in _STAT_NAMES
                if isinstance(buf := getattr(m, name, None), Tensor)
            ]
        )

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for buf, value in self.saved.pop():
                buf.copy_(value)


@contextlib.contextmanager
def _running_stats_on_copies(module: nn.Module) -> Iterator[None]:
    """Let the norm layers of ``module`` update copies of their running statistics, dropped afterwards. Unlike
    :func:`_running_stats_kept` the statistics are never written: a graph recorded meanwhile (BN saves them) stays
    valid for a second differentiation."""
    saved = [
        (m, name, buf)
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase)
        for name in _STAT_NAMES
        if isinstance(buf := m._buffers.get(name), Tensor)
    ]
    for m, name, buf in saved:
        m._buffers[name] = buf.clone()
    try:
        yield
    finally:
        for m, name, buf in saved:
            m._buffers[name] = buf


def recompute_in_backward(unit: nn.Module, fn: Callable[..., Any], *inputs: Tensor) -> Any:
    """``fn(*inputs)`` (a tensor or a tuple of them) keeping only ``inputs`` for backward and running ``fn`` again
    there (``torch.utils.checkpoint``, non-reentrant), with the running statistics of ``unit``'s norm layers updated
    once per step as the dense blocks' efficient mode does, and the same dropout masks if ``unit`` draws any. Units
    inside ``fn`` run plainly (``routes.recomputing``). Call it where ``routes.unit_recomputes`` says so."""

    def run(*args: Tensor) -> Any:
        with recomputing():
            return fn(*args)

    return checkpoint(
        run,
        *inputs,
        use_reentrant=False,
        preserve_rng_state=_draws_random(unit),
        context_fn=lambda: (contextlib.nullcontext(), _running_stats_kept(unit)),
    )


def _draws_random(layer: nn.Module) -> bool:
    """Whether a forward of ``layer`` draws random numbers: dropout or stochastic depth in training."""
    random = ((nn.Dropout, "p"), (DropPath, "drop_prob"))
    return layer.training and any(
        isinstance(m, kind) and getattr(m, rate) > 0 for m in layer.modules() for kind, rate in random
    )


class _RngState:
    """The CPU and (if used) CUDA generator states before a layer's forward, to draw the same dropout masks again."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextlib.contextmanager
    def restored(self) -> Iterator[None]:
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


def _without(params: Sequence[Tensor], module: nn.Module) -> list[Tensor]:
    """``params`` less those of ``module``."""
    drop = {id(p) for p in module.parameters()}
    return [p for p in params if id(p) not in drop]


def _last_conv_separable(layer: nn.Module) -> bool:
    """Whether the layer ends in a plain convolution without dropout after it, so that the recomputation can stop
    at that convolution's input (its backward needs nothing else): no dropout or stochastic depth after it."""
    return (
        layer.preact
        and plain_conv(layer.conv2)
        and isinstance(layer.drop2, nn.Identity)
        and isinstance(layer.drop_path, nn.Identity)
    )


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype ATen's CUDA batch norm keeps statistics in for ``dtype`` input (``at::toAccumulateType``)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _affine_grads(
    dy: Tensor, x: Tensor, spare: Tensor, norm: nn.BatchNorm2d, mean: Tensor, invstd: Tensor, mask: list[bool]
) -> tuple[Tensor | None, Tensor | None]:
    """``(sum(dy * xhat), sum(dy))`` per channel, ``xhat = (x - mean) * invstd`` with the given statistics: the
    weight and bias gradients of a BN layer, from ATen's BN backward. ``spare``: free memory of ``dy``'s shape and
    layout that may be overwritten.

    The statistics go in as ``save_mean``/``save_invstd`` in their accumulate dtype (float32, float64 for float64
    input) with ``train=True``, which makes both kernels use them as given (the two gradients have the same formula
    in training and eval mode, and no input gradient is asked for). The CUDA kernel asserts that both are defined
    and reads them in that dtype (Normalization.cu:607/617; tests/helpers/cuda_contracts); the CPU kernel would accept
    ``None`` and read running statistics instead, which is how this once crashed every GPU while CPU tests passed.
    The weight goes in the same dtype: for a half/bf16 model the kernels disagree on the statistics' dtype when the
    weight is half/bf16 (the CPU reads them in the weight's dtype, CUDA in float32) and agree on float32 for both
    (the mixed-type kernels). The gradients come back in that dtype.

    ``x`` is a channel slice of the buffer, which is not contiguous, and ATen's CPU kernel is several times slower
    on such input (docs/benchmarks.md, "Where the time goes"). On the CPU the sums are therefore taken per sample
    in NCHW (each sample's slice is contiguous), and from a contiguous copy in ``spare`` otherwise."""
    acc = _accumulate_dtype(x.dtype)
    args = (norm.weight.to(acc), None, None, mean.to(acc), invstd.to(acc), True, norm.eps, mask)
    if x.device.type == "cpu" and not x.is_contiguous():
        if len(x) > 1 and x[:1].is_contiguous():
            parts = [
                torch.ops.aten.native_batch_norm_backward(dy[i : i + 1], x[i : i + 1], *args) for i in range(len(x))
            ]
            return tuple(torch.stack([p[j] for p in parts]).sum(0) if mask[j] else None for j in (1, 2))
        x = spare.copy_(x)
    _, dweight, dbias = torch.ops.aten.native_batch_norm_backward(dy, x, *args)
    return dweight, dbias


class _BlockPass:
    """State of one forward (and backward) pass of a dense block over its shared buffer.

    ``record``: ``'none'`` (no backward will come), ``'graphs'`` (keep every layer's autograd graph) or
    ``'recompute'`` (keep only the buffer; rebuild each layer's graph in backward).

    With ``'graphs'`` and shared BN statistics, a layer's graph starts at the output of its first convolution:
    the entry BN-ReLU output that convolution reads (as wide as the layer's input) is not kept but recomputed in
    backward, one elementwise pass into memory reused by every layer, and the convolution's backward is taken from
    it directly. Keeping it would hold a tensor as large as all the layer inputs together (memory quadratic in
    depth) and cost every layer a freshly allocated one, which on the CPU is page-faulted in on first touch.
    """

    def __init__(self, block: SharedBufferBlock, x: Tensor, record: str) -> None:
        self.layers = list(block.children())
        self.record = record
        self.growth_rate = block.growth_rate
        self.in_chs = x.shape[1]
        n, _, h, w = x.shape
        channels = self.in_chs + len(self.layers) * self.growth_rate
        self.shared_bn = shares_batch_norm(self.layers)
        self.memory_format = _buffer_format(x, self.shared_bn, block.cpu_channels_last)
        self.buffer = torch.empty((n, channels, h, w), dtype=x.dtype, device=x.device, memory_format=self.memory_format)
        self.buffer[:, : self.in_chs].copy_(x)
        self.entry_recomputed = (
            record == "graphs" and self.shared_bn and all(plain_conv(layer.conv1) for layer in self.layers)
        )
        self.batch_stats = self.shared_bn and self.layers[0].norm1.training
        self.stat_dtype = _accumulate_dtype(x.dtype)  # batch statistics, and running ones as used (see _norm_stats)
        if self.batch_stats:
            if n * h * w <= 1:
                raise ValueError(
                    f"BatchNorm in training mode needs more than 1 value per channel, got input {tuple(x.shape)}"
                )
            self.mean = x.new_empty(channels, dtype=self.stat_dtype)
            self.var = torch.empty_like(self.mean)
            self.invstd = torch.empty_like(self.mean)
            self.unbiased_var = torch.empty_like(self.mean)
            self._channel_stats(0, self.in_chs, x)
        self.scratch: Tensor | None = None
        self.graphs: list[tuple[Tensor, Tensor] | None] = [None] * len(self.layers)
        self.rng: list[_RngState | None] = [None] * len(self.layers)
        # the dropout masks of the whole block, for a differentiable backward's plain rerun (_DenseBlockFunction)
        draws = record != "none" and any(_draws_random(layer) for layer in self.layers)
        self.block_rng = _RngState(x.device) if draws else None
        self.autocast = (torch.is_autocast_enabled(x.device.type), torch.get_autocast_dtype(x.device.type))

    @contextlib.contextmanager
    def _scratch(self) -> Iterator[None]:
        """One allocation for the entry BN-ReLU outputs of all layers (each is used only until the next layer
        starts, and recomputed where backward needs it again), instead of one per layer: on the CPU a fresh large
        tensor costs page faults on first touch, since glibc returns large blocks to the system when they are
        freed. Freed after the pass, so it is held only while a block's forward or backward runs. Where a layer's
        graph includes its entry (generic layers, or a first convolution that is not a plain ``nn.Conv2d``), each
        layer's BN-ReLU output is saved for its backward and gets its own tensor."""
        if not self.shared_bn or (self.record == "graphs" and not self.entry_recomputed):
            yield
            return
        n, _, h, w = self.buffer.shape
        widest = self.in_chs + (len(self.layers) - 1) * self.growth_rate  # the last layer's input
        self.scratch = self.buffer.new_empty(n * widest * h * w)
        try:
            yield
        finally:
            self.scratch = None

    # ------------------------------------------------------------------------------------------------ forward
    def _channel_stats(self, lo: int, hi: int, source: Tensor) -> None:
        """Batch statistics of buffer channels ``lo:hi`` from ``source``, a dense tensor holding them (reducing the
        dense tensor is faster than reducing the strided buffer slice)."""
        x = source.to(self.buffer.dtype).to(self.mean.dtype)  # the values as stored in the buffer
        # Two passes (mean, then mean squared deviation): ATen's CPU var_mean over (N, H, W) is much slower
        # (docs/benchmarks.md, "Where the time goes").
        mean = x.mean((0, 2, 3), keepdim=True)
        var = (x - mean).square_().mean((0, 2, 3))
        mean = mean.view(-1)
        count = x.numel() // x.shape[1]
        self.mean[lo:hi] = mean
        self.var[lo:hi] = var
        self.invstd[lo:hi] = torch.rsqrt(var + self.layers[0].norm1.eps)
        self.unbiased_var[lo:hi] = var * (count / (count - 1))

    def _norm_stats(self, norm: nn.BatchNorm2d, channels: int) -> tuple[Tensor, Tensor]:
        """(mean, invstd) a layer's entry BN uses, in the statistics' dtype: shared batch statistics in training,
        its running ones in eval (a bf16 model's running statistics are bf16; its invstd is taken in float32, as
        ATen's batch norm does)."""
        if self.batch_stats:
            return self.mean[:channels], self.invstd[:channels]
        var = norm.running_var.to(self.stat_dtype)
        return norm.running_mean.to(self.stat_dtype), torch.rsqrt(var + norm.eps)

    def _scale_shift(self, norm: nn.BatchNorm2d, channels: int) -> tuple[Tensor, Tensor]:
        """BN as ``x * scale + shift`` per channel."""
        mean, invstd = self._norm_stats(norm, channels)
        scale = norm.weight * invstd
        return scale, norm.bias - mean * scale

    def _update_running_stats(self, norm: nn.BatchNorm2d, channels: int) -> None:
        # nn.BatchNorm2d's update: cumulative average when momentum is None, else an exponential one.
        norm.num_batches_tracked.add_(1)
        factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
        norm.running_mean.lerp_(self.mean[:channels].to(norm.running_mean.dtype), factor)
        norm.running_var.lerp_(self.unbiased_var[:channels].to(norm.running_var.dtype), factor)

    def _entry(self, layer: nn.Module, channels: int) -> Tensor:
        """BN-ReLU of the first ``channels`` buffer channels with shared statistics: a fresh tensor when the layer's
        kept graph starts at it, else a view of the pass's scratch memory (see ``_scratch``)."""
        scale, shift = self._scale_shift(layer.norm1, channels)
        n, _, h, w = self.buffer.shape
        if self.scratch is None:
            shape, dtype, device = (n, channels, h, w), self.buffer.dtype, self.buffer.device
            z = torch.empty(shape, dtype=dtype, device=device, memory_format=self.memory_format)
        elif self.memory_format == torch.channels_last:
            z = self.scratch[: n * channels * h * w].view(n, h, w, channels).permute(0, 3, 1, 2)
        else:
            z = self.scratch[: n * channels * h * w].view(n, channels, h, w)
        x, scale, shift = _alias(self.buffer, channels), scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1)
        if self.memory_format == torch.channels_last:  # per-channel vectors broadcast along the innermost dim
            torch.addcmul(shift, x, scale, out=z)
        else:  # NCHW: on the CPU addcmul with these broadcasts is slower than the two passes
            torch.mul(x, scale, out=z).add_(shift)
        return z.relu_()

    def _layer_graph(self, i: int, stop_before_last_conv: bool = False) -> tuple[Tensor, Tensor]:
        """Run layer ``i`` with autograd on: (leaf it starts from, its output or its last convolution's input). The
        leaf is the first convolution's output when the entry is recomputed in backward, else the entry's output
        (shared BN) or the buffer view (generic layers)."""
        layer, channels = self.layers[i], self.in_chs + i * self.growth_rate
        if self.entry_recomputed:
            with torch.no_grad():
                start = layer.conv1(self._entry(layer, channels))
            start.requires_grad_()
            with torch.enable_grad():
                return start, layer.after_first_conv(start)
        if self.shared_bn:
            with torch.no_grad():
                start = self._entry(layer, channels)
            start.requires_grad_()
            with torch.enable_grad():
                if stop_before_last_conv:
                    return start, layer.last_conv_input(start)
                return start, layer.rest(start)
        start = _alias(self.buffer, channels).requires_grad_()
        with torch.enable_grad():
            return start, layer(start)

    def forward(self) -> Tensor:
        with self._scratch():
            for i in range(len(self.layers)):
                self._forward_layer(i)
        return self.buffer

    def _forward_layer(self, i: int) -> None:
        layer, channels = self.layers[i], self.in_chs + i * self.growth_rate
        if self.batch_stats:
            self._update_running_stats(layer.norm1, channels)
        if self.record == "graphs":
            start, out = self._layer_graph(i)
            self.graphs[i] = (start, out)
            out = out.detach()
        else:
            if self.record == "recompute" and _draws_random(layer):
                self.rng[i] = _RngState(self.buffer.device)
            with torch.no_grad():
                if self.shared_bn:
                    out = layer.rest(self._entry(layer, channels))
                else:
                    out = layer(_alias(self.buffer, channels))
        self.buffer[:, channels : channels + self.growth_rate].copy_(out)
        if self.batch_stats:
            self._channel_stats(channels, channels + self.growth_rate, out)

    # ----------------------------------------------------------------------------------------------- backward
    def _recomputed_graph(self, i: int, stop_before_last_conv: bool = False) -> tuple[Tensor, Tensor]:
        enabled, dtype = self.autocast
        rng = self.rng[i].restored() if self.rng[i] is not None else contextlib.nullcontext()
        with rng, torch.autocast(self.buffer.device.type, dtype=dtype, enabled=enabled):
            return self._layer_graph(i, stop_before_last_conv)

    def _finish_channels(self, grad: Tensor, normalised_grad: Tensor | None, lo: int, hi: int) -> Tensor:
        """Gradient w.r.t. buffer channels ``lo:hi``, now that every layer reading them has been through backward.

        ``normalised_grad`` holds the layers' summed gradients w.r.t. the normalised maps ``xhat`` (each layer's
        ``dy * weight``); with shared batch statistics ``invstd`` is the same for every layer, so one training-mode BN
        backward per channel turns that sum into the gradient w.r.t. the maps, statistics' own derivative included:
        dx = invstd * (g - mean(g) - xhat * mean(g * xhat)). That is ATen's training-mode BN backward without a
        weight, run here on dense copies of the two channel slices: one kernel instead of some eight elementwise ops
        over the strided slices, and ATen's CPU kernel is slow on strided input (see ``_affine_grads``)."""
        g = grad[:, lo:hi]
        if normalised_grad is None or lo >= self.normalised_extent:
            return g
        dxhat = self._dense_copy(normalised_grad[:, lo:hi])
        x = self._dense_copy(self.buffer[:, lo:hi])
        mean, invstd = self.mean[lo:hi], self.invstd[lo:hi]
        eps = self.layers[0].norm1.eps
        dx = torch.ops.aten.native_batch_norm_backward(
            dxhat, x, None, None, None, mean, invstd, True, eps, [True, False, False]
        )[0]
        return dx.to(g.dtype).add_(g)

    def _dense_copy(self, channels: Tensor) -> Tensor:
        """A channel slice of a buffer-shaped tensor as a dense tensor in the statistics' dtype."""
        return channels.to(self.mean.dtype, memory_format=self.memory_format, copy=True)

    def backward(self, grad_output: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, list[Tensor | None]]:
        index = {id(p): j for j, p in enumerate(params)}
        param_grads: list[Tensor | None] = [None] * len(params)
        if grad_output.shape[1] == self.buffer.shape[1]:
            grad = grad_output.clone(memory_format=self.memory_format)
        else:  # the block returned only its new maps
            grad = torch.zeros_like(self.buffer)
            grad[:, grad.shape[1] - grad_output.shape[1] :].copy_(grad_output)
        # Training BN: the layers' gradients w.r.t. the normalised maps, summed (see _finish_channels). The last
        # layer (first here) reads every channel but its own output and initialises them; nothing reads the last
        # layer's output, so it gets no such gradient (normalised_extent).
        normalised_grad = torch.empty_like(self.buffer) if self.batch_stats else None
        self.normalised_extent = 0
        with self._scratch():
            for i in reversed(range(len(self.layers))):
                self._backward_layer(i, grad, normalised_grad, index, param_grads)
        return self._finish_channels(grad, normalised_grad, 0, self.in_chs), param_grads

    def _backward_layer(self, i, grad, normalised_grad, index, param_grads) -> None:
        k = self.growth_rate
        layer, channels = self.layers[i], self.in_chs + i * k
        grad_out = self._finish_channels(grad, normalised_grad, channels, channels + k)
        trainable = [p for p in (layer.rest_parameters() if self.shared_bn else layer.parameters()) if p.requires_grad]
        if self.record == "graphs":
            start, out = self.graphs[i]
            self.graphs[i] = None  # free this layer's activations once used
            if self.entry_recomputed:  # conv1 is not in the graph, which starts at its output
                trainable = _without(trainable, layer.conv1)
            grads = torch.autograd.grad(out, [start, *trainable], grad_out)
        else:
            # The recomputation must not count as a second BN update; the statistics are put back only after
            # the layer's backward, which reads them.
            with _running_stats_kept(layer):
                stop = self.shared_bn and _last_conv_separable(layer)
                start, out = self._recomputed_graph(i, stop_before_last_conv=stop)
                if stop:  # the last conv's output is not needed for its backward: not recomputed
                    grad_out = self._conv_backward(layer.conv2, out, grad_out, index, param_grads)
                    trainable = _without(trainable, layer.conv2)
                grads = torch.autograd.grad(out, [start, *trainable], grad_out)
        self._store_grads(trainable, grads[1:], index, param_grads)
        start, out, grad_start = start.detach(), None, grads[0]  # free the layer's graph before the entry's backward
        if self.entry_recomputed:  # the entry output conv1 read, and conv1's backward from it
            start = self._entry(layer, channels)
            grad_start = self._conv_backward(layer.conv1, start, grad_start, index, param_grads).to(start.dtype)
        if self.shared_bn:
            self._entry_backward(layer, channels, start, grad_start, grad, normalised_grad, index, param_grads)
        else:
            grad[:, :channels] += grad_start

    def _entry_backward(self, layer, channels, z, dz, grad, normalised_grad, index, param_grads) -> None:
        """Backward of one layer's ``relu(bn(x))``: its affine parameters' gradients, and its share of the gradient
        w.r.t. the maps (directly with fixed statistics; with batch statistics as a gradient w.r.t. the normalised
        maps, which ``_finish_channels`` sends through the shared normalisation once per channel)."""
        norm = layer.norm1
        dy = torch.ops.aten.threshold_backward.grad_input(dz, z, 0, grad_input=dz)  # ReLU, in place
        mean, invstd = self._norm_stats(norm, channels)
        mask = [False, norm.weight.requires_grad, norm.bias.requires_grad]
        if any(mask):
            dweight, dbias = _affine_grads(dy, _alias(self.buffer, channels), z, norm, mean, invstd, mask)
            for p, g in ((norm.weight, dweight), (norm.bias, dbias)):
                if p.requires_grad:
                    param_grads[index[id(p)]] = g.to(p.dtype)
        if not self.batch_stats:  # fixed statistics: dx = dy * weight * invstd, accumulated in place (one pass)
            scale = (norm.weight * invstd).to(dy.dtype).view(1, -1, 1, 1)
            grad[:, :channels].addcmul_(dy, scale)
            return
        # Batch statistics: the gradient w.r.t. the normalised maps, dy * weight, summed over the layers and sent
        # through the normalisation once per channel (_finish_channels).
        weight = norm.weight.to(dy.dtype).view(1, -1, 1, 1)
        if self.normalised_extent == 0:  # the first contribution initialises the accumulator
            torch.mul(dy, weight, out=normalised_grad[:, :channels])
            self.normalised_extent = channels
        else:
            normalised_grad[:, :channels].addcmul_(dy, weight)

    @staticmethod
    def _store_grads(params: Sequence[Tensor], grads: Sequence[Tensor], index, param_grads) -> None:
        for p, g in zip(params, grads):
            param_grads[index[id(p)]] = g

    def _conv_backward(self, conv: nn.Conv2d, x: Tensor, grad_out: Tensor, index, param_grads) -> Tensor:
        """Backward of a plain convolution from its input ``x`` alone (its output was not kept or recomputed);
        returns the gradient w.r.t. ``x`` in the dtype the convolution ran in."""
        enabled, dtype = self.autocast
        if enabled and x.dtype != torch.float64:  # autocast ran the convolution in its lower precision
            x = x.to(dtype)
        bias_sizes = [conv.out_channels] if conv.bias is not None else None
        mask = [True, conv.weight.requires_grad, conv.bias is not None and conv.bias.requires_grad]
        grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_out.to(x.dtype),
            x,
            conv.weight.to(x.dtype),
            bias_sizes,
            conv.stride,
            conv.padding,
            conv.dilation,
            False,
            [0, 0],
            conv.groups,
            mask,
        )
        for p, g, wanted in ((conv.weight, grad_weight, mask[1]), (conv.bias, grad_bias, mask[2])):
            if wanted:
                param_grads[index[id(p)]] = g.to(p.dtype)
        return grad_x


class _DenseBlockFunction(torch.autograd.Function):
    """A dense block over its shared buffer as one autograd node. Its backward is the buffer's own, except when
    autograd asks for a differentiable gradient (``create_graph=True``: double backward, gradient penalties) or for a
    second backward through a retained graph (the buffer's backward frees what it used): then the block is run again
    on the plain route from its input and differentiated by autograd. The input is not kept for that: the buffer's
    first channels hold its values, and autograd gives them the input's history back when they are unpacked
    (:func:`_apply`)."""

    @staticmethod
    def forward(ctx, block: nn.Module, record: str, holder: dict, x: Tensor, *params: Tensor) -> Tensor:
        state = _BlockPass(block, x, record)
        buffer = state.forward()
        holder.update(buffer=buffer, in_chs=x.shape[1])
        ctx.state, ctx.params, ctx.x_dtype, ctx.block = state, params, x.dtype, block
        # what a plain rerun needs besides the input (the pass itself is dropped after the buffer's backward)
        ctx.replay = _Replay(state.block_rng, state.autocast, state.memory_format)
        # x for the plain rerun (stored as a token, see _apply). Saved tensors that pass through hooks get no version
        # check, so the buffer's is done here: a backward after an in-place change of the output is refused, which
        # the layer inputs (views of it) would otherwise not notice.
        ctx.save_for_backward(buffer, x)
        ctx.buffer_version = buffer._version
        # and the parameters' (the layers' graphs save them through the same hooks): a weight changed in place
        # before backward (an optimiser step before a retained graph's backward) is refused as autograd refuses it
        ctx.param_versions = [p._version for p in params]
        if block.concat_input:
            return buffer
        return buffer[:, x.shape[1] :].clone()

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        buffer, x = ctx.saved_tensors
        if buffer._version != ctx.buffer_version:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an inplace operation: the "
                "output of a dense block (its shared feature buffer, which backward reads); change a copy "
                "(out = out.clone()) instead"
            )
        changed = [i for i, (p, v) in enumerate(zip(ctx.params, ctx.param_versions)) if p._version != v]
        if changed:
            p = ctx.params[changed[0]]
            raise RuntimeError(
                f"one of the variables needed for gradient computation has been modified by an inplace operation: a "
                f"parameter of a dense block ({p.dtype} {tuple(p.shape)}) changed after the forward that backward "
                f"differentiates; run backward before changing the weights (e.g. before optimizer.step())"
            )
        # create_graph=True, a retained graph's second backward, or a batched backward (is_grads_batched, vmap over
        # grad_outputs): the plain rerun, whose operators all have autograd and vmap rules
        if torch.is_grad_enabled() or ctx.state is None or functorch_active((grad_output,)):
            grad_x, param_grads = _plain_backward(ctx, x, grad_output, create_graph=torch.is_grad_enabled())
        else:
            grad_x, param_grads = ctx.state.backward(grad_output, ctx.params)
            # Free the pass (its statistics, what is left of the layers' graphs, its reference to the buffer) now:
            # the graph keeps this node until the whole backward ends, and the earlier blocks' backward runs meanwhile.
            # The buffer itself stays only as long as autograd keeps the saved input (a retained graph).
            ctx.state = None
        grad_x = grad_x.to(ctx.x_dtype) if grad_x is not None else None
        return None, None, None, grad_x, *param_grads


class _Replay(NamedTuple):
    rng: _RngState | None  # the block's dropout masks
    autocast: tuple[bool, torch.dtype]
    memory_format: torch.memory_format


def _plain_backward(ctx, x: Tensor, grad_output: Tensor, create_graph: bool) -> tuple[Tensor, list[Tensor | None]]:
    """The block's gradients by the plain route, rerun from ``x`` with the forward's dropout masks and autocast, its
    running statistics untouched, and differentiated by autograd (with a graph when ``create_graph``)."""
    replay, block = ctx.replay, ctx.block
    enabled, dtype = replay.autocast
    rng = replay.rng.restored() if replay.rng is not None else contextlib.nullcontext()
    with torch.enable_grad(), rng, _running_stats_on_copies(block):
        with torch.autocast(x.device.type, dtype=dtype, enabled=enabled):
            start = x if create_graph else x.detach().requires_grad_(ctx.needs_input_grad[3])
            out = concatenating_forward(block, start.contiguous(memory_format=replay.memory_format))
        inputs = [start] if ctx.needs_input_grad[3] else []
        wanted = [*inputs, *[p for p in ctx.params if p.requires_grad]]
        grads = torch.autograd.grad(out, wanted, grad_output, create_graph=create_graph, materialize_grads=True)
    by_param = {id(p): g for p, g in zip(wanted[len(inputs) :], grads[len(inputs) :])}
    return (grads[0] if inputs else None), [by_param.get(id(p)) for p in ctx.params]


def concatenating_forward(block: nn.Module, x: Tensor) -> Tensor:
    """The plain route: each layer reads the concatenation of the block input and every earlier output."""
    features = [x]
    for layer in block.children():
        features.append(layer(features))
    return torch.cat(features if block.concat_input else features[1:], 1)


def _apply(block: nn.Module, record: str, x: Tensor, params: list[Tensor]) -> Tensor:
    """``_DenseBlockFunction.apply`` with the input saved as a token for the buffer's first channels (the same values),
    so that nothing beyond the buffer is kept; unpacked, it gets ``x``'s autograd history back, which the
    differentiable backward needs. The pack hook also sees the tensors the layers' graphs save inside the call (the
    ``'graphs'`` record) and passes them through."""
    holder: dict[str, Tensor] = {}

    def pack(t: Tensor):
        return _INPUT if t is x else t

    def unpack(packed):
        return holder["buffer"][:, : holder["in_chs"]] if packed is _INPUT else packed

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        return _DenseBlockFunction.apply(block, record, holder, x, *params)


_INPUT = object()


def dense_block_forward(block: SharedBufferBlock, x: Tensor) -> Tensor:
    """Forward of a :class:`~densebackbones.layers.DenseBlock` on the route ``routes.block_route`` chooses."""
    route = block_route(block, x)
    if route == "concat":
        return concatenating_forward(block, x)
    params = list(block.parameters())
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params))
    if not needs_grad:
        out = _BlockPass(block, x, "none").forward()
        return out if block.concat_input else out[:, x.shape[1] :]
    return _apply(block, "recompute" if route == "buffer+recompute" else "graphs", x, params)

"""Which route a dense block, or a unit that follows the memory mode, takes: the one place that decides.

``memory_mode`` says what a block *may* do to save memory; this module says what it does on a given call. Every
dense block (``DenseBlock``: DenseNet, DSOD, PeleeNet, CondenseNet, FC-DenseNet, the detectors' backbones) asks
:func:`block_route`, and every unit recomputed in the efficient mode (PeleeNet's conv-BN-ReLU units and stem, the
Pelee head's units, MSDNet's blocks) asks :func:`unit_recomputes`. Routes:

* ``'concat'``: the plain route. Each layer is called as a module on the concatenation of the block input and every
  earlier output, as torchvision does; ordinary autograd.
* ``'buffer'``: one shared feature buffer (``shared_buffer.py``); each layer's graph is kept from its first
  convolution's output on.
* ``'buffer+recompute'``: the shared buffer, each layer recomputed in backward (least memory).

A block takes the first row that applies:

=====================================================================  ====================  ======================
condition                                                              route                 said
=====================================================================  ====================  ======================
``memory_mode='plain'``                                                concat                --
``torch.jit.script`` (``DenseBlock.forward`` compiles only this)       concat                --
torch.fx, ``jit.trace``, ``torch.export``, ONNX, ``torch.compile``     concat                a warning under fx and
                                                                                             trace for 'efficient'
input on the ``meta`` device (shape inference)                         concat                --
a technique that needs the layers called as modules or ordinary        concat                logged once per
autograd (:data:`TECHNIQUES`, :func:`plain_route_reason`)                                    technique
a layer whose output is no longer ``growth_rate`` maps (pruned)        concat                logged once
``memory_mode='buffer'``                                               buffer                --
``'efficient'``, and a module the recomputation does not know          buffer                logged once
(:func:`recomputable`: a stateful module would update twice)
``memory_mode='efficient'``                                            buffer+recompute      --
=====================================================================  ====================  ======================

Inside the buffer routes, layers whose entry is a plain ``nn.BatchNorm2d`` + ``nn.ReLU`` (:func:`shares_batch_norm`)
share the entry's batch statistics (the fast route); others run their own modules on a view of the buffer (the
generic route). Under ``buffer``, a layer whose first convolution is a plain ``nn.Conv2d`` (:func:`plain_conv`) keeps
its graph from that convolution's output on. Every route gives the same values, gradients and running statistics.

A unit recomputes in backward (``torch.utils.checkpoint``) when its ``memory_mode`` is ``'efficient'``, it is
training with gradients recorded, nothing traces or compiles it, no :data:`TECHNIQUES` applies, every module in it is
:func:`recomputable`, and no enclosing unit is already being recomputed (PeleeNet's stem runs its units plainly inside
its own recomputation). Otherwise it runs once, as a plain module.

What only backward can see is decided there (``shared_buffer._DenseBlockFunction``): a differentiable gradient
(``create_graph=True``), a second backward through a retained graph and a batched backward (``is_grads_batched``)
rerun the block on the plain route; a parameter or output changed in place since the forward is refused, as autograd
refuses it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torch.autograd import forward_ad
from torch.nn.modules import module as _module_globals

try:  # is_fx_tracing of newer torch logs that it also answers True under torch.export; this one does not
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing
except ImportError:  # older torch
    from torch.fx._symbolic_trace import is_fx_tracing as is_fx_symbolic_tracing

__all__ = [
    "MEMORY_MODES",
    "TECHNIQUES",
    "block_route",
    "check_memory_mode",
    "functorch_active",
    "is_traced",
    "plain_conv",
    "plain_route_reason",
    "recomputable",
    "recomputing",
    "resolve_memory_mode",
    "shares_batch_norm",
    "unit_recomputes",
]

_logger = logging.getLogger(__name__)

MEMORY_MODES = ("plain", "buffer", "efficient")

# What sends a block (or a recomputed unit) down the plain route, as logged; docs/memory_modes.md has the table of
# techniques x memory modes, which a test compares with this tuple.
TECHNIQUES = (
    "torch.func transform",
    "forward-mode AD",
    "forward replaced on the instance",
    "parameters replaced by tensors",
    "anomaly detection",
    "saved-tensor hooks",
    "global module hooks",
    "module hooks",
    "parametrization",
)


def check_memory_mode(mode: str) -> str:
    if mode not in MEMORY_MODES:
        raise ValueError(
            f"unknown memory_mode {mode!r}; use 'plain' (concatenate per layer, like torchvision), 'buffer' "
            f"(default: one shared feature buffer, fastest) or 'efficient' (shared buffer + recomputation in "
            f"backward, least memory)"
        )
    return mode


def resolve_memory_mode(memory_efficient: bool, memory_mode: str | None) -> str:
    """The mode a model's ``memory_efficient`` flag (torchvision's name) and ``memory_mode`` argument ask for."""
    if memory_mode is None:
        return "efficient" if memory_efficient else "buffer"
    check_memory_mode(memory_mode)
    if memory_efficient and memory_mode != "efficient":
        raise ValueError(f"memory_efficient=True contradicts memory_mode={memory_mode!r}; pass only one of them")
    return memory_mode


def is_traced() -> bool:
    """Whether a tracer, exporter or compiler records this forward: FX, ``jit.trace``, export, Dynamo."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or is_fx_symbolic_tracing()


# ----------------------------------------------------------------------------------------- the techniques
def functorch_active(inputs: Sequence[Tensor]) -> bool:
    """Whether a torch.func transform (grad, vmap, jacrev, jvp...) is running: a custom autograd Function without a
    vmap rule and ``setup_context`` cannot run under one."""
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return True
    functorch = torch._C._functorch
    # the legacy batched tensors of autograd's own vmap: grad(..., is_grads_batched=True), jacobian(vectorize=True)
    return any(functorch.is_functorch_wrapped_tensor(x) or functorch.is_legacy_batchedtensor(x) for x in inputs)


def _saved_tensor_hooks_active() -> bool:
    """Whether ``torch.autograd.graph.saved_tensors_hooks`` (``save_on_cpu``, non-reentrant checkpoint...) is in
    force: what the shared buffer keeps for backward would bypass it."""
    return torch._C._autograd._top_saved_tensors_default_hooks(False) is not None


def _global_module_hooks() -> bool:
    return bool(
        _module_globals._global_forward_hooks
        or _module_globals._global_forward_pre_hooks
        or _module_globals._global_backward_hooks
        or _module_globals._global_backward_pre_hooks
    )


def plain_route_reason(unit: nn.Module, inputs: Sequence[Tensor]) -> str | None:
    """The technique (an entry of :data:`TECHNIQUES`, with the submodule it concerns) that needs ``unit``'s layers
    called as modules with ordinary autograd now, or None. Hooks and parametrizations count on the unit's
    submodules, not on the unit itself, whose own ``__call__`` runs whatever its route.

    * module hooks (forward, forward-pre, backward, backward-pre; old-style ``torch.nn.utils.prune``, ``weight_norm``
      and ``spectral_norm`` are forward-pre hooks; quantization observers and Grad-CAM, captum, torchinfo, ptflops and
      torch-pruning use hooks): a fused layer is never called, so its hooks would not fire, and tensors a hook sees
      would not be in the graph;
    * parametrizations (``torch.nn.utils.parametrize``, ``parametrizations.weight_norm``...): the buffer's backward
      differentiates the computed weight, not the parametrization's originals;
    * ``torch.func`` transforms and ``functional_call`` (parameters that are not ``nn.Parameter`` leaves);
    * saved-tensor hooks (CPU offload of activations): the buffer would not be offloaded;
    * anomaly detection: the forward traceback of a failing backward should name the layer's own operator."""
    if functorch_active(inputs):
        return "torch.func transform"
    if forward_ad._current_level >= 0:  # inside forward_ad.dual_level(): the buffer's Function has no jvp
        return "forward-mode AD"
    if torch.is_anomaly_enabled():
        return "anomaly detection"
    if _saved_tensor_hooks_active():
        return "saved-tensor hooks"
    if _global_module_hooks():
        return "global module hooks"
    # One pass without names (this runs on every forward: an explicit walk of ``_modules`` costs a fraction of
    # ``modules()``); names only for the message.
    stack = list(unit._modules.values())
    while stack:
        sub = stack.pop()
        if sub is None:
            continue
        kind = _submodule_technique(sub)
        if kind is not None:
            name = next(n for n, m in unit.named_modules() if m is sub)
            return f"{kind} ({name})"
        stack.extend(sub._modules.values())
    return None


def _submodule_technique(sub: nn.Module) -> str | None:
    if sub._forward_hooks or sub._forward_pre_hooks or sub._backward_hooks or sub._backward_pre_hooks:
        return "module hooks"
    if "forward" in sub.__dict__:  # an instance's own forward (monkey-patched): the fused route would not call it
        return "forward replaced on the instance"
    if "parametrizations" in sub._modules:  # parametrize.is_parametrized without its getattr (slow on a Module)
        return "parametrization"
    for param in sub._parameters.values():
        if param is not None and not isinstance(param, nn.Parameter):
            return "parameters replaced by tensors"
    return None


# Modules a recomputation may run twice: torch.nn's own (their only state, BN's running statistics, is restored by
# shared_buffer's recomputation), this library's, torchvision's FrozenBatchNorm2d and timm's DropPath (no state; its
# random draws are replayed like dropout's). Another module (a QAT
# fake-quantizer, a LoRA wrapper, a user's layer) may change state when it runs, so a block holding one keeps its
# graph instead (``'buffer'``) and a unit runs once.
_RECOMPUTABLE_MODULES = ("torch.nn.modules.", "densebackbones.", "torchvision.ops.misc", "timm.layers.drop")


def recomputable(unit: nn.Module) -> str | None:
    """None when running ``unit`` a second time in backward is safe, else the first submodule that may not be."""
    stack = [unit]
    while stack:
        sub = stack.pop()
        if sub is None:
            continue
        stack.extend(sub._modules.values())
        if not type(sub).__module__.startswith(_RECOMPUTABLE_MODULES):
            name = next(n for n, m in unit.named_modules() if m is sub)
            return f"{name or 'the unit'} ({type(sub).__module__}.{type(sub).__qualname__})"
    return None


# ----------------------------------------------------------------------------------------- the buffer's sub-routes
def plain_conv(conv: nn.Module | None) -> bool:
    """Whether ``conv`` is a zero-padded ``nn.Conv2d`` whose backward ATen's ``convolution_backward`` computes
    from the convolution's input alone."""
    return type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)


def shares_batch_norm(layers: Sequence[nn.Module]) -> bool:
    """Whether every layer's entry is pre-activation ``nn.BatchNorm2d`` + ``nn.ReLU`` with one eps and train flag
    (the buffer's fast route: batch statistics computed once per channel)."""
    # A layer with ``preact`` True is a PreActivationLayer (a test holds every registered model to it); a
    # runtime-checkable isinstance per layer and forward would cost more than the attribute read.
    if not all(getattr(layer, "preact", False) for layer in layers):  # e.g. PeleeNet's two-way layers
        return False
    first = layers[0].norm1
    return all(
        type(layer.norm1) is nn.BatchNorm2d
        and type(layer.act1) is nn.ReLU
        and layer.norm1.affine
        and layer.norm1.track_running_stats
        and layer.norm1.eps == first.eps
        and layer.norm1.training == first.training
        for layer in layers
    )


def _layer_widths_changed(block: nn.Module) -> str | None:
    """The first layer whose output is no longer the block's ``growth_rate`` maps (a pruning tool narrowed it), or
    None. The buffer gives layer ``i`` the first ``in + i * k`` channels, which is what the plain route's
    concatenation gives it only while every earlier layer writes ``k`` maps."""
    for name, layer in block.named_children():
        try:
            width = layer.output_channels()
        except AttributeError:  # a module without the layer's usual parts (replaced by the user)
            return f"{name} (its output width is unknown)"
        if width != block.growth_rate:
            return f"{name} (writes {width} maps, the block's growth rate is {block.growth_rate})"
    return None


# ----------------------------------------------------------------------------------------- the decisions
_said: set[str] = set()


def _say_once(kind: str, message: str) -> None:
    if kind not in _said:
        _said.add(kind)
        _logger.warning(message)


_warned_traced_efficient = False


def _warn_traced_efficient() -> None:
    """Say once that a traced efficient block keeps no memory savings. Not under ``torch.compile``/export: Dynamo
    would guard on the once-only flag, so the compiled graph (or a ``fullgraph=True`` failure) would depend on whether
    the warning had already fired; ``torch.compile`` users learn it from the route table instead."""
    global _warned_traced_efficient
    if torch.compiler.is_compiling() or _warned_traced_efficient:
        return
    warnings.warn(
        "memory_mode='efficient' does not apply under torch.jit.trace/torch.fx tracing: the plain concatenation "
        "graph is traced instead (train in eager mode for the memory savings)",
        stacklevel=4,
    )
    _warned_traced_efficient = True


def block_route(block: nn.Module, x: Tensor) -> str:
    """The route a dense block (``memory_mode``, ``growth_rate``, layers as children) takes for input ``x``:
    ``'concat'``, ``'buffer'`` or ``'buffer+recompute'`` (the table above)."""
    mode = block.memory_mode
    if mode == "plain":
        return "concat"
    # is_traced() first: under torch.fx, x.device is a proxy, which cannot steer a branch
    if is_traced():
        if mode == "efficient":
            _warn_traced_efficient()
        return "concat"
    if x.device.type == "meta":  # shape inference (e.g. counting parameters without memory): no storage to share
        return "concat"
    reason = plain_route_reason(block, (x,)) or _layer_widths_changed(block)
    if reason is not None:
        kind = reason.split(" (")[0]
        _say_once(
            kind,
            f"{reason} in a dense block: it takes the plain route (per-layer concatenation, torchvision's "
            f"computation), so memory_mode={mode!r} saves no memory there; logged once per kind",
        )
        return "concat"
    if mode == "efficient":
        unknown = recomputable(block)
        if unknown is not None:
            _say_once(
                "unknown module",
                f"a dense block holds {unknown}, which the efficient mode's recomputation does not know (it may "
                f"change state when run twice): the block keeps its layers' graphs instead (memory_mode='buffer'); "
                f"logged once",
            )
            return "buffer"
        return "buffer+recompute"
    return "buffer"


_recompute_depth = threading.local()


def recomputing() -> contextlib.AbstractContextManager[None]:
    """Marks the body of a recomputed unit (its forward, and its rerun in backward): units inside it run plainly."""
    return _recomputing()


@contextlib.contextmanager
def _recomputing() -> Iterator[None]:
    _recompute_depth.value = getattr(_recompute_depth, "value", 0) + 1
    try:
        yield
    finally:
        _recompute_depth.value -= 1


def unit_recomputes(
    unit: nn.Module, inputs: Sequence[Tensor], efficient: bool | None = None, compiled: bool = False
) -> bool:
    """Whether ``unit`` (``memory_mode`` attribute, or ``efficient`` given) runs through
    ``shared_buffer.recompute_in_backward`` now (the rules above); logs once why not when the mode asked for it.
    ``compiled``: the unit recomputes under ``torch.compile`` too, as a plain ``torch.utils.checkpoint`` that
    Dynamo traces (MSDNet's blocks)."""
    if efficient is None:
        efficient = unit.memory_mode == "efficient"
    if not (efficient and unit.training and torch.is_grad_enabled()):
        return False
    if torch.compiler.is_compiling():
        return compiled
    if is_traced():
        return False
    if getattr(_recompute_depth, "value", 0):
        return False
    reason = plain_route_reason(unit, inputs)
    if reason is not None:
        kind = reason.split(" (")[0]
        _say_once(
            "unit " + kind,
            f"{reason} in a unit of the efficient memory mode: it runs once without recomputation (no memory "
            f"saved there); logged once per kind",
        )
        return False
    unknown = recomputable(unit)
    if unknown is not None:
        _say_once(
            "unit unknown module",
            f"a unit of the efficient memory mode holds {unknown}, which a recomputation may not run twice: it "
            f"runs once without recomputation; logged once",
        )
        return False
    return True

"""Any PyTorch technique that works on torchvision's DenseNet works on every family in every memory mode, with the
plain route's results (``densebackbones/layers/routes.py`` decides when a block or unit leaves its fast route).

Each kind of technique runs on a family's tiny variant in float64 twice: in ``memory_mode='plain'`` (the reference,
torchvision's computation) and in each fast mode (``'buffer'``, ``'efficient'``; MSDNet has ``'efficient'`` only).
Outputs, gradients, hook captures and running statistics must be equal, or both runs must fail with the same error.
Where a kind has many shapes (which submodule is hooked, pruned, parametrized or swapped), hypothesis draws it from
the submodules inside the dense blocks and the units that follow the memory mode.
"""

from __future__ import annotations

import copy
import functools
import io
import logging
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
import torch.nn.utils.parametrize as parametrize
import torch.nn.utils.prune as prune
from helpers import FAMILIES, flat_outputs, smallest_input, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchvision.ops.misc import FrozenBatchNorm2d

import densebackbones as db
from densebackbones.layers import TECHNIQUES

CASES = [
    pytest.param(name, mode, id=f"{family}-{mode}")
    for family, name in FAMILIES.items()
    for mode in (("efficient",) if family == "msdnet" else ("buffer", "efficient"))
]
# Pelee's detectors take 144 px images, the costliest cases here by far: two images a batch (their 1x1 maps' batch
# statistics over two values are as exact in float64 in both routes).
LARGE_INPUTS = ("pelee", "pelee_bc121_k32")
# At their smallest size DenseASPP (two dense blocks and seven batch norms at output stride 8) and DSOD's head on
# DenseNet-121 (batch norms after its prediction layers) normalise 1x1 maps, where the second derivatives of batch
# statistics over four values amplify float64 rounding past the tolerance (1e-4, or 0.17 on values of 1e6): compared
# at twice the size.
TWICE_THE_SMALLEST = ("dense_aspp", "dsod_bc")
# Submodules drawn per kind and case: two in the default suite (every family x fast mode x kind is already ~700
# cases); TECHNIQUE_EXAMPLES=50 explores further.
DRAWN = settings(
    max_examples=int(os.environ.get("TECHNIQUE_EXAMPLES", "2")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


# ------------------------------------------------------------------------------------------------------ harness
@functools.cache
def prototype(name: str) -> nn.Module:
    """The tiny float64 model of ``name`` in the plain mode, built once (Pelee's default boxes take a while)."""
    return tiny_model(name, "plain", torch.float64)


def pair(name: str, mode: str, train: bool = True) -> tuple[nn.Module, nn.Module]:
    """Copies of :func:`prototype` in the plain mode and in ``mode``: through the model's own ``set_memory_mode``
    where it has one (MSDNet's blocks follow its flag, not the dense blocks' attribute)."""
    plain = copy.deepcopy(prototype(name)).train(train)
    fast = copy.deepcopy(plain)
    if hasattr(fast, "set_memory_mode"):
        fast.set_memory_mode(mode)
    else:
        db.layers.set_memory_mode(fast, mode)
    assert getattr(fast, "memory_mode", mode) == mode
    return plain, fast


def loss_of(output) -> torch.Tensor:
    """A loss that weights every output element differently."""
    return sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype).view_as(t)).sum() for t in flat_outputs(output))


def step(model: nn.Module, x: torch.Tensor, seed: int = 0) -> list[torch.Tensor]:
    """One forward and backward: the outputs, the input's gradient, every parameter's gradient (zeros for none) and
    every buffer afterwards."""
    torch.manual_seed(seed)  # the same dropout masks in both models
    x = x.clone().requires_grad_()
    output = model(x)
    loss_of(output).backward()
    return [*[t.detach() for t in flat_outputs(output)], x.grad, *gradients(model), *model.buffers()]


def gradients(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def outcome(kind, model: nn.Module, x: torch.Tensor, *args):
    """The tensors ``kind`` returns, or the type of the error it raised."""
    try:
        return [t.detach().clone() if isinstance(t, torch.Tensor) else t for t in kind(model, x, *args)]
    except Exception as error:  # compared with the plain model's outcome
        return type(error).__name__


def assert_same(kind, name: str, mode: str, *args, train: bool = True, atol: float = 1e-7) -> None:
    plain, fast = pair(name, mode, train)
    x = smallest_input(plain, torch.float64, batch=2 if name in LARGE_INPUTS else 4)
    if name.startswith(TWICE_THE_SMALLEST):
        x = torch.randn(*x.shape[:2], 2 * x.shape[-2], 2 * x.shape[-1], dtype=x.dtype)
    expected, got = outcome(kind, plain, x, *args), outcome(kind, fast, x, *args)
    if isinstance(expected, str) or isinstance(got, str):
        assert got == expected, f"plain: {expected}, {mode}: {got}"
        return
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        if isinstance(e, torch.Tensor):
            torch.testing.assert_close(g, e, rtol=1e-7, atol=atol, msg=lambda m, i=i: f"result {i}: {m}")
        else:
            assert g == e, (i, g, e)


@functools.cache
def candidates(name: str, types: tuple[type, ...] = (nn.Module,)) -> list[str]:
    """:func:`inner_modules` of the tiny variant of ``name``."""
    return inner_modules(tiny_model(name, "plain"), types)


def inner_modules(model: nn.Module, types=(nn.Module,)) -> list[str]:
    """Names of the submodules whose route the memory mode changes: those strictly inside a dense block, a unit
    that follows the memory mode, or an MSDNet block."""
    units = [
        name
        for name, m in model.named_modules()
        if name and (hasattr(m, "memory_mode") or (name.count(".") == 1 and name.startswith("blocks.")))
    ]
    return sorted(
        name
        for name, m in model.named_modules()
        if isinstance(m, types) and any(name.startswith(unit + ".") for unit in units)
    )


def convs(name: str) -> list[str]:
    return candidates(name, (nn.Conv2d,))


def norms(name: str) -> list[str]:
    return candidates(name, (nn.BatchNorm2d,))


def unstrided_convs(name: str) -> list[str]:
    model = tiny_model(name, "plain")
    return [conv for conv in convs(name) if model.get_submodule(conv).stride == (1, 1)]


# ------------------------------------------------------------------------------------------------- module hooks
def forward_hooked(model, x, name):
    seen = []
    model.get_submodule(name).register_forward_hook(lambda m, args, out: seen.append(out.detach().clone()))
    return [*step(model, x), torch.tensor(len(seen)), *seen]


def forward_pre_hooked(model, x, name):
    seen = []

    def hook(m, args):
        seen.append(args[0].detach().clone() if isinstance(args[0], torch.Tensor) else torch.tensor(len(args[0])))

    model.get_submodule(name).register_forward_pre_hook(hook)
    return [*step(model, x), torch.tensor(len(seen)), *seen]


def backward_hooked(model, x, name):
    seen = []
    model.get_submodule(name).register_full_backward_hook(lambda m, gi, go: seen.append(go[0].clone()))
    return [*step(model, x), torch.tensor(len(seen)), *seen]


def backward_pre_hooked(model, x, name):
    seen = []
    model.get_submodule(name).register_full_backward_pre_hook(lambda m, go: seen.append(go[0].clone()))
    return [*step(model, x), torch.tensor(len(seen)), *seen]


def hooked_after_a_first_step(model, x, name):
    first = step(model, x)
    model.zero_grad()
    return [*first, *forward_hooked(model, x, name)]


def output_modifying_hook(model, x, name):
    # A forward hook that returns a new output (what quantization observers and feature-editing tools do).
    model.get_submodule(name).register_forward_hook(lambda m, args, out: out * 0.5)
    return step(model, x)


@pytest.mark.parametrize(
    "kind",
    [forward_hooked, forward_pre_hooked, backward_hooked, backward_pre_hooked, hooked_after_a_first_step],
)
@pytest.mark.parametrize("name, mode", CASES)
@DRAWN
@given(data=st.data())
def test_module_hooks(name, mode, kind, data):
    assert_same(kind, name, mode, data.draw(st.sampled_from(candidates(name)), label="hooked"))


@pytest.mark.parametrize("name, mode", CASES)
@DRAWN
@given(data=st.data())
def test_hooks_that_change_outputs(name, mode, data):
    assert_same(output_modifying_hook, name, mode, data.draw(st.sampled_from(convs(name)), label="hooked"))


def globally_hooked(model, x):
    seen = []
    handles = [
        nn.modules.module.register_module_forward_hook(lambda m, a, out: seen.append(type(m).__name__)),
        nn.modules.module.register_module_full_backward_hook(lambda m, gi, go: seen.append("backward")),
    ]
    try:
        results = step(model, x)
    finally:
        for handle in handles:
            handle.remove()
    return [*results, seen]


@pytest.mark.parametrize("name, mode", CASES)
def test_global_module_hooks(name, mode):
    assert_same(globally_hooked, name, mode)


# -------------------------------------------------------------------------------------------- parametrizations
class Doubled(nn.Module):
    def forward(self, weight):
        return 2 * weight


def pruned(model, x, name):
    conv = model.get_submodule(name)
    prune.l1_unstructured(conv, "weight", amount=0.5)
    return [*step(model, x), conv.weight_orig.grad]


def parametrized(model, x, name):
    conv = model.get_submodule(name)
    parametrize.register_parametrization(conv, "weight", Doubled())
    return [*step(model, x), conv.parametrizations.weight.original.grad]


def weight_normed(model, x, name):
    conv = torch.nn.utils.parametrizations.weight_norm(model.get_submodule(name))
    weight = conv.parametrizations.weight
    return [*step(model, x), weight.original0.grad, weight.original1.grad]


def spectral_normed(model, x, name):
    torch.manual_seed(0)  # the power iteration's random start
    conv = torch.nn.utils.parametrizations.spectral_norm(model.get_submodule(name))
    return [*step(model, x), conv.parametrizations.weight.original.grad]


def old_weight_normed(model, x, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of the parametrization
        conv = torch.nn.utils.weight_norm(model.get_submodule(name))
    return [*step(model, x), conv.weight_g.grad, conv.weight_v.grad]


def old_spectral_normed(model, x, name):
    torch.manual_seed(0)
    conv = torch.nn.utils.spectral_norm(model.get_submodule(name))
    return [*step(model, x), conv.weight_orig.grad, conv.weight_u]


@pytest.mark.parametrize(
    "kind", [pruned, parametrized, weight_normed, spectral_normed, old_weight_normed, old_spectral_normed]
)
@pytest.mark.parametrize("name, mode", CASES)
@DRAWN
@given(data=st.data())
def test_parametrizations(name, mode, kind, data):
    assert_same(kind, name, mode, data.draw(st.sampled_from(convs(name)), label="conv"))


# ------------------------------------------------------------------------------------------------ module swaps
class LoRAConv(nn.Module):
    """A frozen convolution plus a trainable low-rank update, as LoRA adapters wrap layers."""

    def __init__(self, conv: nn.Conv2d, rank: int = 2) -> None:
        super().__init__()
        self.base = conv.requires_grad_(False)
        self.down = nn.Conv2d(conv.in_channels, rank, 1, bias=False, dtype=conv.weight.dtype)
        self.up = nn.Conv2d(rank, conv.out_channels, conv.kernel_size, padding=conv.padding, bias=False)
        self.up.to(conv.weight.dtype)
        nn.init.normal_(self.up.weight, std=0.1)
        self.stride, self.dilation = conv.stride, conv.dilation

    def forward(self, x):
        return self.base(x) + self.up(self.down(x))


class CallCounter(nn.Module):
    """A stateful module (like a quantization observer): counts how often it runs."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def swapped(model, x, name, make):
    parent, _, attr = name.rpartition(".")
    old = model.get_submodule(name)
    torch.manual_seed(0)  # the new module's initial weights
    setattr(model.get_submodule(parent) if parent else model, attr, make(old))
    return [*step(model, x), *step(model, x, seed=1)]


SWAPS = {
    "groupnorm": (norms, lambda bn: nn.GroupNorm(1, bn.num_features).double()),
    "frozen-bn": (norms, lambda bn: FrozenBatchNorm2d(bn.num_features).double()),
    "lora": (unstrided_convs, LoRAConv),
    "stateful": (convs, CallCounter),
}


@pytest.mark.parametrize("swap", list(SWAPS))
@pytest.mark.parametrize("name, mode", CASES)
@DRAWN
@given(data=st.data())
def test_module_swaps(name, mode, swap, data):
    candidates_of, make = SWAPS[swap]
    assert_same(swapped, name, mode, data.draw(st.sampled_from(candidates_of(name)), label="swapped"), make)


def test_a_stateful_module_is_not_run_twice_by_the_recomputation():
    model = tiny_model("densenet_bc121_k32", "efficient", torch.float64, train=True)
    layer = model.features.denseblock1.denselayer1
    layer.conv2 = CallCounter(layer.conv2)
    step(model, smallest_input(model, torch.float64, batch=4))
    assert int(layer.conv2.calls) == 1


# ------------------------------------------------------------------------------------------------- torch.func
def functional_call_grad(model, x):
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    torch.manual_seed(0)
    output = torch.func.functional_call(model, params, (x,))
    return list(torch.autograd.grad(loss_of(output), list(params.values()), allow_unused=True, materialize_grads=True))


def func_grad(model, x):
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p):
        return loss_of(torch.func.functional_call(model, (p, buffers), (x,)))

    return list(torch.func.grad(loss)(params).values())


def per_sample_grads(model, x):
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p, sample):
        return loss_of(torch.func.functional_call(model, (p, buffers), (sample[None],)))

    return list(torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x).values())


def input_jacobian(model, x):
    return [torch.func.jacrev(lambda inp: loss_of(model(inp)))(x[:1])]


def ensemble(model, x):
    copies = [model, copy.deepcopy(model)]
    with torch.no_grad():
        for p in copies[1].parameters():
            p.mul_(0.9)
    params, buffers = torch.func.stack_module_state(copies)
    base = copy.deepcopy(model).to("meta")

    def run(p, b, inp):
        return flat_outputs(torch.func.functional_call(base, (p, b), (inp,)))

    return torch.func.vmap(run, in_dims=(0, 0, None))(params, buffers, x)


@pytest.mark.parametrize("name, mode", CASES)
def test_functional_call_with_autograd(name, mode):
    assert_same(functional_call_grad, name, mode)


@pytest.mark.parametrize("kind", [func_grad, per_sample_grads, input_jacobian, ensemble])
@pytest.mark.parametrize("name, mode", CASES)
def test_torch_func_transforms(name, mode, kind):
    # evaluation mode: batch statistics have no per-sample meaning under vmap
    assert_same(kind, name, mode, train=False)


# ---------------------------------------------------------------------------------------------- autograd modes
def double_backward(model, x):
    torch.manual_seed(0)
    x = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss_of(model(x)), x, create_graph=True)
    grad.square().sum().backward()  # a gradient penalty
    return [grad, x.grad, *gradients(model), *model.buffers()]


def under_anomaly_detection(model, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Anomaly Detection has been enabled"
        with torch.autograd.detect_anomaly():
            return step(model, x)


def saved_on_cpu(model, x):
    with torch.autograd.graph.save_on_cpu():
        return step(model, x)


def retained_graph_twice(model, x):
    torch.manual_seed(0)
    loss = loss_of(model(x.clone().requires_grad_()))
    loss.backward(retain_graph=True)
    first = [g.clone() for g in gradients(model)]
    loss.backward()
    return [*first, *gradients(model)]


def copied_mid_step(model, x):
    torch.manual_seed(0)
    output = model(x)
    copies = [copy.deepcopy(model), pickle.loads(pickle.dumps(model))]
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    copies.append(torch.load(buffer, weights_only=False))
    loss_of(output).backward()
    results = [*gradients(model)]
    for other in copies:
        other.eval()
        with torch.no_grad():
            results += flat_outputs(other(x))
        results += step(other.train(), x)
    return results


@pytest.mark.parametrize("kind", [under_anomaly_detection, saved_on_cpu, retained_graph_twice, copied_mid_step])
@pytest.mark.parametrize("name, mode", CASES)
def test_autograd_modes(name, mode, kind):
    assert_same(kind, name, mode)


@pytest.mark.parametrize("name, mode", CASES)
def test_double_backward(name, mode):
    # Second derivatives through BN over the tiny models' 1x1 maps (four values a channel) amplify float64 rounding
    # to ~1e-7; a missing or wrong term would be of the gradients' own size (~1e-2 and up).
    assert_same(double_backward, name, mode, atol=1e-5)


# ------------------------------------------------------------------------- found by a new user's trial (issue 32)
def forward_mode_ad(model, x):
    with fwAD.dual_level():
        output = model(fwAD.make_dual(x, torch.linspace(-1, 1, x.numel(), dtype=x.dtype).view_as(x)))
        return [fwAD.unpack_dual(t).tangent for t in flat_outputs(output)]


def batched_backward(model, x):
    x = x.clone().requires_grad_()
    output = flat_outputs(model(x))[0]
    directions = torch.stack([torch.linspace(-1, 1, output.numel(), dtype=output.dtype).view_as(output)] * 2)
    directions[1] = directions[1].flip(0)
    return [torch.autograd.grad(output, x, directions, is_grads_batched=True)[0]]


def weights_changed_before_backward(model, x):
    torch.manual_seed(0)
    output = model(x)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # e.g. an optimiser step before the backward of a retained graph: autograd refuses it
    loss_of(output).backward()
    return gradients(model)


def forward_overridden(model, x, name):
    module = model.get_submodule(name)
    original = module.forward
    module.forward = lambda *args, **kwargs: original(*args, **kwargs) * 0.5  # an instance's own forward
    return step(model, x)


@pytest.mark.parametrize("kind", [forward_mode_ad, batched_backward])
@pytest.mark.parametrize("name, mode", CASES)
def test_forward_mode_ad_and_batched_backward(name, mode, kind):
    assert_same(kind, name, mode, train=False)


@pytest.mark.parametrize("name, mode", CASES)
def test_weights_changed_before_backward_are_refused(name, mode):
    assert_same(weights_changed_before_backward, name, mode)


@pytest.mark.parametrize("name, mode", CASES)
@DRAWN
@given(data=st.data())
def test_forward_replaced_on_an_instance(name, mode, data):
    assert_same(forward_overridden, name, mode, data.draw(st.sampled_from(convs(name)), label="patched"))


# ----------------------------------------------------------------------------------------------- what is said
def test_the_plain_route_is_logged_once_per_technique(caplog):
    model = tiny_model("densenet_bc121_k32", "buffer", torch.float64, train=True)
    x = smallest_input(model, torch.float64, batch=4)
    db.layers.routes._said.clear()
    model.features.denseblock2.denselayer1.conv1.register_forward_hook(lambda *args: None)
    with caplog.at_level(logging.WARNING, logger="densebackbones.layers.routes"):
        step(model, x)
        step(model, x)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert "module hooks (denselayer1.conv1)" in messages[0] and "memory_mode='buffer' saves no memory" in messages[0]


def test_every_technique_is_in_the_docs_table():
    text = (Path(__file__).parents[2] / "docs" / "memory_modes.md").read_text(encoding="utf-8")
    for technique in TECHNIQUES:
        assert technique in text, technique


@pytest.mark.parametrize("mode", ["buffer", "efficient"])
def test_a_model_without_techniques_keeps_its_fast_route(mode):
    model = tiny_model("densenet_bc121_k32", mode, torch.float32, train=True)
    x = smallest_input(model, torch.float32, batch=4)
    routes = [db.layers.block_route(block, x) for block in model.modules() if hasattr(block, "growth_rate")]
    assert routes and set(routes) == {"buffer" if mode == "buffer" else "buffer+recompute"}

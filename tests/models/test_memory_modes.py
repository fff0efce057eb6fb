"""Every memory mode equals the plain (per-layer concatenation) mode: outputs, input and parameter gradients and
BatchNorm running statistics, in float64, in training and eval mode, with and without dropout."""

from __future__ import annotations

import copy
import inspect
import warnings

import pytest
import torch
import torch.nn as nn
from helpers import DEVICES, FAMILIES, family_of, tiny_densenet, tiny_dsod, tiny_fc_densenet, tiny_kwargs, tiny_pelee

import densebackbones as db
from densebackbones.layers import (
    CondenseLayer,
    DenseBlock,
    DenseLayer,
    PreActivationLayer,
    SharedBufferBlock,
    SharedBufferLayer,
    TwoWayDenseLayer,
    drop_path_rates,
    set_cpu_channels_last,
    set_memory_mode,
)
from densebackbones.registry import model_class

FAST_MODES = ["buffer", "efficient"]


def _step(model, x, seed=0):
    """Forward and backward of a loss that weights every output element differently; the output (a tuple for
    detectors) and the input's gradient."""
    torch.manual_seed(seed)  # same dropout masks in both models
    x = x.clone().requires_grad_()
    out = model(x)
    outputs = out if isinstance(out, tuple) else (out,)
    sum(
        (o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype, device=o.device).view_as(o)).sum() for o in outputs
    ).backward()
    return out, x.grad


def _assert_same_step(reference, model, x, seed=0):
    out_r, grad_r = _step(reference, x, seed)
    out_m, grad_m = _step(model, x, seed)
    torch.testing.assert_close(out_m, out_r)
    torch.testing.assert_close(grad_m, grad_r)
    for (name, p), q in zip(reference.named_parameters(), model.parameters()):
        if p.grad is None:
            assert q.grad is None, name
        else:
            torch.testing.assert_close(q.grad, p.grad, msg=f"gradient of {name}")
    for (name, a), b in zip(reference.named_buffers(), model.buffers()):
        torch.testing.assert_close(b, a, msg=f"buffer {name}")


def _pair(mode, model=None, dtype=torch.float64, **kwargs):
    plain = model if model is not None else tiny_densenet(block_config=(3, 2), memory_mode="plain", **kwargs)
    plain = plain.to(dtype)
    other = copy.deepcopy(plain)
    assert set_memory_mode(other, mode) > 0
    return plain, other


@pytest.mark.parametrize("mode", FAST_MODES)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("proj_drop_rate", [0.0, 0.2], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("bn_size", [4, None], ids=["bottleneck", "basic"])
def test_step_equals_plain(mode, train, proj_drop_rate, bn_size):
    plain, other = _pair(mode, proj_drop_rate=proj_drop_rate, bn_size=bn_size)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    if not train:  # non-trivial running statistics first
        _assert_same_step(plain, other, x, seed=5)
    plain.train(train), other.train(train)
    _assert_same_step(plain, other, x)
    _assert_same_step(plain, other, x, seed=1)  # a second step: statistics and RNG keep in step
    if train:
        norm1 = other.features.denseblock1.denselayer1.norm1
        assert int(norm1.num_batches_tracked) == 2  # once per step, also when recomputing
    with torch.no_grad():
        torch.manual_seed(3)
        expected = plain(x)
        torch.manual_seed(3)
        torch.testing.assert_close(other(x), expected)


@pytest.mark.parametrize("mode", FAST_MODES)
def test_generic_layers_equal_plain(mode):
    # GroupNorm and a non-ReLU activation take the generic route (the layer's own modules on buffer views).
    model = tiny_densenet(
        block_config=(3, 2), memory_mode="plain", norm_layer=lambda c: nn.GroupNorm(2, c), act_layer=nn.SiLU
    )
    plain, other = _pair(mode, model)
    _assert_same_step(plain, other, torch.randn(4, 3, 8, 8, dtype=torch.float64))


@pytest.mark.parametrize("mode", FAST_MODES)
@pytest.mark.parametrize("preact", [True, False], ids=["preact", "postact"])
@pytest.mark.parametrize("concat_input", [True, False], ids=["with-input", "new-maps-only"])
@pytest.mark.parametrize("bn_size", [4, None], ids=["bottleneck", "basic"])
def test_block_variants_equal_plain(mode, preact, concat_input, bn_size):
    # FC-DenseNet's layers (basic, biased convolutions) and up path (only the new maps); post-activation layers
    # run conv first.
    block = DenseBlock(
        3, 6, 4, concat_input=concat_input, preact=preact, drop_rate=0.1, bn_size=bn_size, conv_bias=True,
        memory_mode="plain",
    )  # fmt: skip
    plain, other = _pair(mode, nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), block))
    _assert_same_step(plain, other, torch.randn(3, 3, 6, 6, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32-channels-last"])
def test_first_convolution_that_is_not_plain_keeps_the_entry_in_the_graph(dtype):
    # A first convolution ATen's convolution_backward cannot stand in for (here: reflect padding, numerically the
    # same for a 1x1 convolution) makes the buffer mode keep each layer's entry output for autograd instead of
    # recomputing it; in float32 on the CPU that path runs on a channels_last buffer.
    plain = tiny_densenet(block_config=(3, 2), memory_mode="plain")
    for name, module in plain.named_modules():
        if name.endswith("conv1") and "denselayer" in name:
            module.padding_mode = "reflect"
    plain, other = _pair("buffer", plain, dtype=dtype)
    x = torch.randn(4, 3, 8, 8, dtype=dtype)
    if dtype == torch.float64:
        _assert_same_step(plain, other, x)
        return
    out_p, grad_p = _step(plain, x)
    out_o, grad_o = _step(other, x)
    assert other.forward_features(x).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out_o, out_p, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_o, grad_p, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", FAST_MODES)
def test_momentum_none_frozen_parameters_and_channels_last(mode):
    plain, other = _pair(mode, tiny_densenet(block_config=(3, 2), memory_mode="plain"))
    for model in (plain, other):
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = None  # cumulative average
        model.features.denseblock1.denselayer2.requires_grad_(False)
        model.to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    _assert_same_step(plain, other, x)
    _assert_same_step(plain, other, x, seed=2)
    assert other.features.denseblock1.denselayer2.conv1.weight.grad is None


@pytest.mark.parametrize("bn_size", [4, None], ids=["bottleneck", "basic"])
def test_buffer_mode_keeps_no_entry_output(bn_size, monkeypatch):
    # The buffer mode recomputes each layer's entry BN-ReLU in backward instead of saving it: no tensor as wide as
    # a layer's input (in_chs + i * k channels, i >= 1) may be saved for backward, while the plain mode saves them.
    # Saved-tensor hooks send a block down the plain route (routes.py): here they only observe, so the route is kept.
    monkeypatch.setattr(db.layers.routes, "_saved_tensor_hooks_active", lambda: False)
    in_chs, k, num_layers = 5, 3, 4
    widths = {in_chs + i * k for i in range(1, num_layers)}
    saved = {}
    for mode in ("plain", "buffer"):
        block = DenseBlock(num_layers, in_chs, k, bn_size=bn_size, memory_mode=mode)
        shapes = saved[mode] = []

        def pack(t, shapes=shapes):
            shapes.append(tuple(t.shape))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = block(torch.randn(2, in_chs, 6, 6, requires_grad=True))
        out.sum().backward()
    wide = {mode: [s for s in shapes if len(s) == 4 and s[1] in widths] for mode, shapes in saved.items()}
    assert wide["plain"], "the check needs the plain mode to save its layers' entry outputs"
    assert wide["buffer"] == [], wide["buffer"]


def _first_block_output(model, x):
    model = copy.deepcopy(model)  # the block's training-mode forward updates running statistics
    return model.features.denseblock1(model.features.conv0(x))


@pytest.mark.parametrize("mode", FAST_MODES)
def test_cpu_blocks_compute_in_channels_last(mode):
    # float32 NCHW input on the CPU: the block works in (and returns) channels_last, with the plain mode's values;
    # set_cpu_channels_last(model, False) keeps NCHW, and float64 keeps the input's layout either way.
    plain, other = _pair(mode, dtype=torch.float32)
    x = torch.randn(4, 3, 8, 8)
    out = _first_block_output(other, x)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    _assert_same_step(plain, other, x)
    set_cpu_channels_last(other, False)  # this model's setting; the plain one is untouched
    assert _first_block_output(other, x).is_contiguous()
    _assert_same_step(plain, other, x)
    assert _first_block_output(other.double(), x.double()).is_contiguous()


def test_models_run_their_stem_in_the_blocks_layout():
    # The model converts its input once, so the stem (feature level 0) computes in channels_last as well; not in
    # the plain mode, not when switched off, not for blocks without BatchNorm-ReLU entries.
    x = torch.randn(2, 3, 8, 8)

    def stem_is_channels_last(model):
        stem = model.forward_intermediates(x, indices=[0], intermediates_only=True)[0]
        return stem.is_contiguous(memory_format=torch.channels_last) and not stem.is_contiguous()

    assert stem_is_channels_last(tiny_densenet())
    assert not stem_is_channels_last(tiny_densenet(memory_mode="plain"))
    assert not stem_is_channels_last(tiny_densenet(norm_layer=lambda c: nn.GroupNorm(2, c)))
    switched_off = tiny_densenet()
    switched_off.set_cpu_channels_last(False)
    assert not stem_is_channels_last(switched_off)
    assert stem_is_channels_last(tiny_densenet())  # a setting of the model, not of the process
    stem_only = db.create_model("densenet_bc100_k12_cifar", features_only=True, out_indices=(0,))
    assert stem_only(torch.randn(2, 3, 32, 32))[0].is_contiguous()  # no dense block left to match


def test_bf16_autocast():
    # The buffer mode is close to the plain one (rounding differs: shared statistics are computed in float32 from
    # the bf16 buffer), and the efficient mode recomputes under the forward's autocast state, so it equals the
    # buffer mode exactly.
    grads = {}
    for mode in db.layers.MEMORY_MODES:
        torch.manual_seed(0)
        model = tiny_densenet(block_config=(3, 2), memory_mode=mode)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(torch.randn(4, 3, 8, 8))
        out.float().sum().backward()
        grads[mode] = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(grads["efficient"], grads["buffer"], rtol=0, atol=0)
    assert (grads["buffer"] - grads["plain"]).norm() < 0.03 * grads["plain"].norm()


def test_model_flags_and_switches():
    model = db.create_model("densenet_bc100_k12_cifar", memory_efficient=True)
    blocks = [m for m in model.modules() if isinstance(m, DenseBlock)]
    assert len(blocks) == 3 and all(b.memory_mode == "efficient" for b in blocks)
    model.set_grad_checkpointing(False)
    assert all(b.memory_mode == "buffer" for b in blocks)
    model.set_memory_mode("plain")
    assert all(b.memory_mode == "plain" for b in blocks)
    assert db.create_model("densenet_bc100_k12_cifar").features.denseblock1.memory_mode == "buffer"
    assert (
        db.create_model("dsod_ds64_192_48_1", memory_mode="efficient").features.denseblock2.memory_mode == "efficient"
    )
    with pytest.raises(ValueError, match="unknown memory_mode 'fast'.*'plain'.*'buffer'.*'efficient'"):
        db.create_model("densenet_bc100_k12_cifar", memory_mode="fast")
    with pytest.raises(ValueError, match="memory_efficient=True contradicts memory_mode='plain'"):
        db.create_model("densenet_bc100_k12_cifar", memory_efficient=True, memory_mode="plain")


def test_state_dict_keys_equal_in_every_mode():
    keys = [list(db.create_model("densenet_bc121_k32", memory_mode=m).state_dict()) for m in db.layers.MEMORY_MODES]
    assert keys[0] == keys[1] == keys[2]


@pytest.mark.parametrize("mode", FAST_MODES)
def test_inplace_change_of_the_output_is_refused(mode):
    block = DenseBlock(2, 4, 2, memory_mode=mode)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    out = block(x)
    out.mul_(2)  # would silently corrupt the saved layer inputs, which are views of the output
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_batch_norm_training_needs_more_than_one_value():
    block = DenseBlock(2, 4, 2)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        block(torch.randn(1, 4, 1, 1))


@pytest.mark.integration
def test_torch_compile_gives_the_same_output():
    model = tiny_densenet(block_config=(2, 2)).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        torch.testing.assert_close(compiled(x), expected)


@pytest.mark.integration
def test_efficient_mode_under_torch_compile_matches_without_a_warning():
    # A once-only warning inside the compiled region would make the graph depend on whether it had fired; the route
    # table of layers/shared_buffer.py documents the plain route instead.
    model = tiny_densenet(block_config=(2, 2), memory_mode="efficient")
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    db.layers.routes._warned_traced_efficient = False
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="memory_mode='efficient'")
        got = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    torch.testing.assert_close(got, expected)


def test_efficient_mode_under_fx_tracing_warns_and_matches():
    model = tiny_densenet(block_config=(2, 2), memory_mode="efficient").eval()
    x = torch.randn(2, 3, 8, 8)
    db.layers.routes._warned_traced_efficient = False
    with pytest.warns(UserWarning, match="memory_mode='efficient' does not apply under torch.jit.trace/torch.fx"):
        graph = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", FAST_MODES)
@pytest.mark.parametrize("proj_drop_rate", [0.0, 0.2], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_cuda_step_equals_plain(mode, proj_drop_rate, layout):
    # CUDA's RNG state, cuDNN's batch norm and ATen's CUDA BN backward on strided buffer slices, in float64: two
    # training steps (running statistics updated once per step), then a step with frozen BN statistics.
    plain, other = _pair(mode, proj_drop_rate=proj_drop_rate)
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    plain.to("cuda", memory_format=memory_format), other.to("cuda", memory_format=memory_format)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, device="cuda").contiguous(memory_format=memory_format)
    _assert_same_step(plain, other, x)
    _assert_same_step(plain, other, x, seed=1)
    assert int(other.features.denseblock2.denselayer1.norm1.num_batches_tracked) == 2
    plain.eval(), other.eval()
    _assert_same_step(plain, other, x, seed=2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", FAST_MODES)
@pytest.mark.parametrize("name", ["fc_densenet", "dsod", "pelee"])
def test_heads_step_equals_plain(name, mode, device):
    # FC-DenseNet (basic layers with biased convolutions, dropout, an up path of new maps only), DSOD (dense
    # backbone, dense prediction structure, two outputs) and Pelee (two-way layers, post-activation transitions, ceil
    # pools, ResBlocks), in float64: training step, then frozen BN statistics.
    model, size = {"fc_densenet": (tiny_fc_densenet, 32), "dsod": (tiny_dsod, 64), "pelee": (tiny_pelee, 144)}[name]
    model = model()
    set_memory_mode(model, "plain")
    plain, other = _pair(mode, model)
    plain.to(device), other.to(device)
    x = torch.randn(2, 3, size, size, dtype=torch.float64, device=device)
    _assert_same_step(plain, other, x)
    plain.eval(), other.eval()
    _assert_same_step(plain, other, x, seed=1)


# Autocast: the fast modes round differently from the plain one (shared statistics are computed in float32 from the
# low-precision buffer; the plain mode's batch norm takes them from its own input), so they agree within these
# relative errors (norm of the difference / norm of the plain mode's value), about 4x what the CPU shows.
AUTOCAST_TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 5e-3}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", FAST_MODES)
@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_step_close_to_plain(amp, mode, device):
    results = {}
    for name in ("plain", mode):
        torch.manual_seed(0)
        # no dropout: on the CPU the fast modes compute in channels_last, where the same random stream gives a
        # mask over other elements (the float64 tests cover dropout)
        model = tiny_densenet(block_config=(3, 2), memory_mode=name).to(device)
        x = torch.randn(4, 3, 8, 8, device=device)
        with torch.autocast(device, dtype=amp):
            out = model(x)
        assert out.dtype == amp
        (out.float() * torch.linspace(-1, 1, out.numel(), device=device).view_as(out)).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        results[name] = (out.float(), grads, model.features.denseblock1.denselayer1.norm1.running_var.clone())
    for ours, reference in zip(results[mode], results["plain"]):
        assert (ours - reference).norm() <= AUTOCAST_TOLERANCE[amp] * reference.norm()


@pytest.mark.parametrize("name", db.list_models())
def test_every_dense_block_and_layer_meets_the_shared_buffer_protocols(name):
    # The shared buffer knows blocks and layers only through these protocols (layers/shared_buffer.py): every block of
    # every registered model, heads included, offers what it reads.
    with torch.device("meta"):
        model = db.create_model(name)
    blocks = [m for m in model.modules() if isinstance(m, DenseBlock)]
    assert blocks or name.startswith("msdnet"), name
    for block in blocks:
        assert isinstance(block, SharedBufferBlock), (name, type(block).__name__)
        for layer in block.children():
            assert isinstance(layer, SharedBufferLayer), (name, type(layer).__name__)
            # a layer with a pre-activation entry offers the fast route's parts; the others take the generic route
            assert isinstance(layer, PreActivationLayer) or not getattr(layer, "preact", False), name


# ----------------------------------------------------------------------------------- stochastic depth (drop path)
DROP_PATH_MODELS = [
    name for name in db.list_models() if "drop_path_rate" in inspect.signature(model_class(name).__init__).parameters
]


def test_drop_path_models_cover_every_backbone_family():
    # The families whose dense layers take stochastic depth; a new backbone family must be added here on purpose.
    assert {family_of(name) for name in DROP_PATH_MODELS} == {
        "densenet", "densenet_cifar", "dsod_backbone", "peleenet", "condensenet", "condensenet_converted",
    }  # fmt: skip


def test_drop_path_rates_rise_linearly_over_the_network():
    rates = drop_path_rates(0.3, (2, 1, 1))
    assert [len(block) for block in rates] == [2, 1, 1]
    assert sum(rates, []) == pytest.approx([0.0, 0.1, 0.2, 0.3], abs=1e-15)
    assert drop_path_rates(0.3, (1,)) == [[0.3]]
    assert drop_path_rates(0.0, (3, 2)) == [[0.0] * 3, [0.0] * 2]


@pytest.mark.parametrize("name", DROP_PATH_MODELS)
def test_every_dense_layer_gets_its_rate(name):
    with torch.device("meta"):
        model = db.create_model(name, drop_path_rate=0.2)
    layers = [layer for block in model.modules() if isinstance(block, DenseBlock) for layer in block.children()]
    rates = [getattr(layer.drop_path, "drop_prob", 0.0) for layer in layers]
    expected = torch.linspace(0, 0.2, len(layers), dtype=torch.float64).tolist()
    assert rates == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "layer",
    [
        lambda: DenseLayer(6, 4, drop_path_rate=0.5),
        lambda: DenseLayer(6, 4, bn_size=None, preact=False, drop_path_rate=0.5),
        lambda: TwoWayDenseLayer(32, 8, bottleneck_width=2, drop_path_rate=0.5),
        lambda: CondenseLayer(8, 4, groups=2, drop_path_rate=0.5),
    ],
    ids=["preact", "postact", "two-way", "condense"],
)
def test_drop_path_drops_or_rescales_whole_samples(layer):
    layer = layer().double()
    x = torch.randn(64, layer_input_channels(layer), 4, 4, dtype=torch.float64)
    kept = copy.deepcopy(layer)
    kept.drop_path = nn.Identity()
    torch.manual_seed(0)
    dropped = layer(x)
    torch.manual_seed(0)
    reference = kept(x)
    scale = (dropped.flatten(1) * reference.flatten(1)).sum(1) / reference.flatten(1).square().sum(1)
    assert set(scale.round(decimals=9).tolist()) == {0.0, 2.0}  # each sample zeroed or kept and scaled by 1 / (1 - p)
    torch.testing.assert_close(layer.eval()(x), kept.eval()(x))  # identity in eval


def layer_input_channels(layer: nn.Module) -> int:
    return next(m for m in layer.modules() if isinstance(m, nn.Conv2d)).in_channels


@pytest.mark.parametrize("mode", FAST_MODES)
@pytest.mark.parametrize("name", [FAMILIES[f] for f in ("densenet_cifar", "dsod_backbone", "peleenet", "condensenet")])
def test_drop_path_step_equals_plain(name, mode):
    # The buffer routes draw the same per-sample masks as the plain route (and the recomputation draws them again).
    torch.manual_seed(0)
    kwargs = dict(tiny_kwargs(name), block_config=(2,) * len(tiny_kwargs(name).get("block_config", (1,) * 4)))
    model = db.create_model(name, drop_path_rate=0.5, memory_mode="plain", **kwargs)
    if hasattr(model, "set_training_progress"):  # CondenseNet: at the start of its schedule
        model.set_training_progress(0.0)
    plain, other = _pair(mode, model)
    x = torch.randn(4, 3, model.min_input_size, model.min_input_size, dtype=torch.float64)
    _assert_same_step(plain, other, x)
    _assert_same_step(plain, other, x, seed=1)
    torch.manual_seed(0)
    with_rate = plain(x)
    torch.manual_seed(0)
    without = copy.deepcopy(plain)
    for module in without.modules():
        if hasattr(module, "drop_path"):
            module.drop_path = nn.Identity()
    assert not torch.allclose(with_rate, without(x))  # the masks did change the step

"""MSDNet under TorchScript, torch.fx (symbolic_trace and torchvision's feature extractor), torch.export, ONNX and
torch.compile(fullgraph=True): each gives eager's outputs, for both outputs ('final': one tensor, 'all': every
exit's logits) and both memory modes ('efficient' recomputes blocks in backward; a scripted or traced graph runs the
plain blocks, which give the same values)."""

from __future__ import annotations

import copy

import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from densebackbones.export import check_onnx, export_onnx
from densebackbones.models import MSDNet
from densebackbones.models.msdnet import SkippedScale

OUTPUTS = ("final", "all")
MEMORY_MODES = ("plain", "efficient")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")

SIDE = 20  # the tiny CIFAR layout's smallest input: 3 scales, the coarsest at stride 4 must keep 5 px


def _tiny(output: str, memory_mode: str) -> MSDNet:
    """The smallest MSDNet of tests/models/test_msdnet.py (3 blocks, 3 scales, 2 exits' worth of channels), with
    running statistics that are not BN's initial 0/1, so that eval-mode outputs depend on them. Its last block keeps
    the finer scales, which nothing reads there: those units are SkippedScale modules, compiled too."""
    torch.manual_seed(0)
    model = MSDNet(
        num_classes=5,
        num_blocks=3,
        base=2,
        step=1,
        channels=4,
        growth_rate=2,
        growth_factors=(1, 2, 4),
        bottleneck_factors=(1, 2, 4),
        stem_type="cifar",
        output=output,
        memory_mode=memory_mode,
    )
    assert any(isinstance(m, SkippedScale) for m in model.modules())
    with torch.no_grad():
        model.train()(torch.randn(4, 3, SIDE, SIDE))
    return model.eval()


def _as_list(out: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _assert_same_outputs(got, expected) -> None:
    got, expected = _as_list(got), _as_list(expected)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        torch.testing.assert_close(g, e, msg=lambda m, i=i: f"exit {i}: {m}")


def _grads_after_one_step(model: torch.nn.Module, run, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    sum(out.square().sum() for out in _as_list(run(x))).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("memory_mode", MEMORY_MODES)
@pytest.mark.parametrize("output", OUTPUTS)
def test_torchscript_equals_eager(output, memory_mode):
    model = _tiny(output, memory_mode)
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        _assert_same_outputs(scripted(x), model(x))


@pytest.mark.parametrize("memory_mode", MEMORY_MODES)
def test_torchscript_trains_like_eager(memory_mode):
    """In training the scripted model runs the plain blocks (recomputation is torch.utils.checkpoint, which
    TorchScript does not compile): the same outputs, gradients and running statistics as eager's mode."""
    eager = _tiny("final", memory_mode).train()
    scripted_source = copy.deepcopy(eager)
    scripted = torch.jit.script(scripted_source)
    x = torch.randn(3, 3, SIDE, SIDE)
    expected = _grads_after_one_step(eager, eager, x)
    got = _grads_after_one_step(scripted_source, scripted, x)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=lambda m, n=name: f"{n}: {m}")
    for (name, buffer), (_, reference) in zip(scripted_source.named_buffers(), eager.named_buffers()):
        torch.testing.assert_close(buffer, reference, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("memory_mode", MEMORY_MODES)
@pytest.mark.parametrize("output", OUTPUTS)
def test_fx_symbolic_trace_equals_eager(output, memory_mode):
    model = _tiny(output, memory_mode)
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        _assert_same_outputs(traced(x), model(x))


def test_fx_trace_in_training_takes_the_plain_route():
    """Traced in training, the efficient model's graph runs the plain blocks (no checkpoint call on proxies) and
    trains as eager's efficient mode does."""
    eager = _tiny("final", "efficient").train()
    traced = torch.fx.symbolic_trace(copy.deepcopy(eager))
    assert "checkpoint" not in traced.code
    x = torch.randn(3, 3, SIDE, SIDE)
    expected = _grads_after_one_step(eager, eager, x)
    got = _grads_after_one_step(traced, traced, x)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("memory_mode", MEMORY_MODES)
def test_feature_extractor_and_its_script_equal_eager(memory_mode):
    """torchvision's create_feature_extractor on the logits node (as timm's FX tests build it), and that graph
    scripted: its generated code carries forward's annotations, which must be types TorchScript knows."""
    model = _tiny("final", memory_mode)
    train_nodes, eval_nodes = get_graph_node_names(model)
    extractor = create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]]
    )
    scripted = torch.jit.script(extractor.eval())
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        expected = model(x)
        (from_graph,) = extractor(x).values()
        (from_script,) = scripted(x).values()
    torch.testing.assert_close(from_graph, expected)
    torch.testing.assert_close(from_script, expected)


@pytest.mark.parametrize("memory_mode", MEMORY_MODES)
@pytest.mark.parametrize("output", OUTPUTS)
def test_torch_export_equals_eager(output, memory_mode):
    model = _tiny(output, memory_mode)
    x = torch.randn(2, 3, SIDE, SIDE)
    exported = torch.export.export(model, (x,)).module()
    other = torch.randn(2, 3, SIDE, SIDE)  # not the example the graph was exported with
    with torch.no_grad():
        _assert_same_outputs(exported(other), model(other))


@pytest.mark.integration
@pytest.mark.parametrize("output", OUTPUTS)
def test_onnx_equals_eager(tmp_path, output):
    """densebackbones.export.export_onnx with a dynamic batch; onnxruntime gives eager's logits (every exit's, one
    ONNX output each, for output='all')."""
    onnxruntime = pytest.importorskip("onnxruntime")
    model = _tiny(output, "plain")
    path = export_onnx(model, tmp_path / f"msdnet_{output}.onnx", torch.randn(2, 3, SIDE, SIDE))
    x = torch.randn(3, 3, SIDE, SIDE)
    if output == "final":
        check_onnx(model, path, x)
        return
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        _assert_same_outputs([torch.from_numpy(g) for g in got], model(x))


@pytest.mark.integration
@pytest.mark.parametrize(
    "memory_mode",
    ["efficient", pytest.param("plain", marks=pytest.mark.slow)],  # Inductor takes ~30 s a case
)
def test_compile_fullgraph_eval_and_one_training_step(memory_mode):
    """torch.compile(fullgraph=True) (CPU inductor): an eval forward equal to eager's, then one training step whose
    gradients and running statistics are eager's (the efficient mode's recomputation compiled as
    torch.utils.checkpoint)."""
    eager = _tiny("final", memory_mode)
    compiled_source = copy.deepcopy(eager)
    compiled = torch.compile(compiled_source, fullgraph=True)
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x))
    eager.train()
    compiled_source.train()
    expected = _grads_after_one_step(eager, eager, x)
    got = _grads_after_one_step(compiled_source, compiled, x)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=lambda m, n=name: f"{n}: {m}")
    for (name, buffer), (_, reference) in zip(compiled_source.named_buffers(), eager.named_buffers()):
        torch.testing.assert_close(buffer, reference, msg=lambda m, n=name: f"{n}: {m}")

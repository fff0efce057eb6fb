"""Hook-based tools on the default and efficient memory modes report what they report on the plain model:
pytorch-grad-cam and captum (Grad-CAM on a dense layer), torchinfo and ptflops (rows, parameters, operation counts),
torch-pruning (a pruned model that runs and trains). Each is a real client installed with the dev extra; float64 so
that the comparisons are exact up to rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers import tiny_model

torch_pruning = pytest.importorskip("torch_pruning")
torchinfo = pytest.importorskip("torchinfo")
ptflops = pytest.importorskip("ptflops")
captum_attr = pytest.importorskip("captum.attr")
grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

FAST_MODES = ["buffer", "efficient"]
# A tiny DenseNet-BC-121 (one layer per block) and PeleeNet (two-way layers, units recomputed in 'efficient').
MODELS = ["densenet_bc121_k32", "peleenet"]


def pair(name: str, mode: str, train: bool = False) -> tuple[nn.Module, nn.Module]:
    plain = tiny_model(name, "plain", torch.float64, train=train)
    fast = tiny_model(name, mode, torch.float64, train=train)
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def images(batch: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, 3, 64, 64, dtype=torch.float64)


def dense_layer(model: nn.Module) -> nn.Module:
    """The first layer of the model's second dense block (a module the fast routes do not call themselves)."""
    blocks = [m for m in model.modules() if hasattr(m, "growth_rate") and hasattr(m, "memory_mode")]
    return next(iter(blocks[1].children()))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("mode", FAST_MODES)
def test_pytorch_grad_cam_on_a_dense_layer(name, mode):
    maps = []
    for model in pair(name, mode):
        with grad_cam.GradCAM(model=model, target_layers=[dense_layer(model)]) as cam:
            maps.append(torch.from_numpy(cam(input_tensor=images(), targets=[ClassifierOutputTarget(1)] * 2)))
    assert maps[0].abs().sum() > 0  # a heat map, not zeros
    torch.testing.assert_close(maps[1], maps[0])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("mode", FAST_MODES)
def test_captum_layer_gradcam_and_layer_activation(name, mode):
    results = []
    for model in pair(name, mode):
        layer = dense_layer(model)
        gradcam = captum_attr.LayerGradCam(model, layer).attribute(images(), target=1)
        activation = captum_attr.LayerActivation(model, layer).attribute(images())
        results.append((gradcam, activation))
    torch.testing.assert_close(results[1], results[0])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("mode", FAST_MODES)
def test_torchinfo_summary(name, mode):
    summaries = [
        torchinfo.summary(model, input_data=images(), verbose=0, depth=10, dtypes=[torch.float64])
        for model in pair(name, mode)
    ]
    plain, fast = summaries
    assert len(fast.summary_list) == len(plain.summary_list) > 20
    assert fast.total_mult_adds == plain.total_mult_adds > 0
    assert fast.total_params == plain.total_params
    assert fast.total_output_bytes == plain.total_output_bytes


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("mode", FAST_MODES)
def test_ptflops_operation_counts(name, mode):
    counts = []
    for model in pair(name, mode):
        macs, params = ptflops.get_model_complexity_info(
            model.float(), (3, 64, 64), as_strings=False, print_per_layer_stat=False, verbose=False, backend="pytorch"
        )
        counts.append((macs, params))
    assert counts[1] == counts[0] and counts[0][0] > 0


@pytest.mark.parametrize("mode", FAST_MODES)
def test_torch_pruning_magnitude_pruner(mode):
    pruned = []
    for model in pair("densenet_bc121_k32", mode, train=True):
        example = images()
        pruner = torch_pruning.pruner.MagnitudePruner(
            model,
            example_inputs=example,
            importance=torch_pruning.importance.MagnitudeImportance(p=1),
            pruning_ratio=0.5,
            ignored_layers=[model.get_classifier()],
        )
        pruner.step()
        # the pruned model trains: a step through every block (the narrowed layers send the blocks down the plain
        # route) and its outputs
        model(example).logsumexp(1).sum().backward()
        model.eval()
        with torch.no_grad():
            pruned.append((sum(p.numel() for p in model.parameters()), model(example)))
    (plain_count, plain_out), (fast_count, fast_out) = pruned
    full = sum(p.numel() for p in tiny_model("densenet_bc121_k32", "plain").parameters())
    assert fast_count == plain_count < full
    torch.testing.assert_close(fast_out, plain_out)

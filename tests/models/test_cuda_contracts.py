"""The CPU guard for the CUDA paths: training steps and eval forwards of every memory mode, on every model kind,
under :class:`cuda_contracts.CudaContracts`, which raises where an op is called with arguments its CUDA kernel
rejects (the CPU kernels tolerate more; see that module for each contract and its source line).

Before this guard, the default memory mode crashed at its first backward on every GPU while this suite passed."""

from __future__ import annotations

import pytest
import torch
from helpers import DEVICES, tiny_densenet, tiny_dsod, tiny_fc_densenet, tiny_pelee
from helpers.cuda_contracts import CudaContractError, CudaContracts

import densebackbones as db
from densebackbones.layers import MEMORY_MODES, set_memory_mode


def _densenet_bc_cifar():
    return tiny_densenet(block_config=(2, 2)), (3, 8, 8)


def _densenet121_shaped():  # ImageNet layout: 7x7/2 stem, max-pool, four blocks with transitions
    return db.create_model("densenet_bc121_k32", growth_rate=4, block_config=(2, 1, 1, 2), num_classes=3), (3, 32, 32)


def _fc_densenet():
    return tiny_fc_densenet(), (3, 32, 32)


def _dsod():
    return tiny_dsod(), (3, 64, 64)


def _pelee():  # two-way layers, post-activation units recomputed in the efficient mode, ResBlocks
    return tiny_pelee(), (3, 144, 144)


def _condensenet():  # masked learned group convolutions, grouped 3x3 convolutions
    model = db.create_model(
        "condensenet86_cifar", block_config=(2, 2), growth_rate=(4, 8), num_classes=3, stem_type="cifar"
    )
    return model, (3, 8, 8)


def _msdnet():  # multi-scale layers, transitions, an exit per block (a list of logits)
    model = db.create_model(
        "msdnet_anytime_cifar", num_blocks=2, base=2, step=1, channels=4, growth_rate=2, num_classes=3, output="all"
    )
    return model, (3, 20, 20)


MODELS = {
    "densenet_bc_cifar": _densenet_bc_cifar,
    "densenet121_shaped": _densenet121_shaped,
    "fc_densenet": _fc_densenet,
    "dsod": _dsod,
    "pelee": _pelee,
    "condensenet": _condensenet,
    "msdnet": _msdnet,
}
# Families whose dense layers take the shared buffer's own BN route (direct ATen calls); the others (post-activation,
# masked or multi-scale layers) run their modules through autograd.
SHARED_BN = {"densenet_bc_cifar", "densenet121_shaped", "fc_densenet", "dsod"}
# How each step runs: float32 NCHW and channels_last, bf16 autocast (bf16 activations, float32 weights and
# statistics: the mixed-type kernels), a model cast to bf16 (bf16 weights and running statistics), and a
# fine-tuning step with frozen BN statistics (eval-mode BN backward: running statistics in the BN backward).
VARIANTS = ["float32", "channels_last", "autocast_bf16", "bf16_model", "frozen_bn"]


def _loss(out) -> torch.Tensor:
    outputs = out if isinstance(out, (tuple, list)) else (out,)
    return sum(o.float().square().mean() for o in outputs)


def _run(model, shape, variant, device) -> CudaContracts:
    model, x = model.to(device), torch.randn(2, *shape, device=device)
    if variant == "channels_last":
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if variant == "bf16_model":
        model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)
    model.train(variant != "frozen_bn")
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=variant == "autocast_bf16")
    with CudaContracts() as contracts:
        with autocast:
            loss = _loss(model(x))
        loss.backward()
        model.eval()
        with torch.no_grad(), autocast:
            _loss(model(x))
    assert torch.isfinite(loss)
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    return contracts


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", MEMORY_MODES)
@pytest.mark.parametrize("name", list(MODELS))
def test_step_keeps_cuda_contracts(name, mode, variant, device):
    # On CUDA (-m gpu) the same steps meet the real kernels, with the contracts still checked.
    model, shape = MODELS[name]()
    if name == "msdnet":  # no dense blocks: its memory switch is timm's gradient checkpointing of whole blocks
        model.set_grad_checkpointing(mode == "efficient")
    else:
        assert set_memory_mode(model, mode) > 0
    contracts = _run(model, shape, variant, device)
    if mode != "plain" and name in SHARED_BN:  # the shared-buffer backward made the direct calls under contract
        assert contracts.counts["native_batch_norm_backward"] > 0
        # conv1's backward from the recomputed entry (buffer), conv2's where the recomputation stops before it
        # (efficient; not in FC-DenseNet, whose dropout follows the 3x3 convolution)
        if not (mode == "efficient" and name == "fc_densenet"):
            assert contracts.counts["convolution_backward"] > 0


def test_contract_violation_is_reported():
    # The guard can fail: the call that crashed on the H200 (eval-mode BN backward without save_mean/save_invstd).
    x, dy = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    weight, mean, var = torch.ones(3), torch.zeros(3), torch.ones(3)
    with CudaContracts(), pytest.raises(CudaContractError, match=r"save_mean is undefined.*Normalization.cu:607"):
        torch.ops.aten.native_batch_norm_backward(
            dy, x, weight, mean, var, None, None, False, 1e-5, [False, True, True]
        )
    invstd = torch.ones(3, dtype=torch.bfloat16)
    with CudaContracts(), pytest.raises(CudaContractError, match="save_invstd is torch.bfloat16"):
        torch.ops.aten.native_batch_norm_backward(
            dy.bfloat16(), x.bfloat16(), weight, mean, var, mean, invstd, False, 1e-5, [False, True, True]
        )
    with CudaContracts(), pytest.raises(CudaContractError, match="different dtypes"):
        torch.ops.aten.convolution_backward(
            dy.bfloat16(), x, torch.ones(3, 3, 1, 1), None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True] * 3
        )

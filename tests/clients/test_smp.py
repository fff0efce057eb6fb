"""segmentation_models_pytorch (the 'dev' extra) with our backbones as ``tu-`` encoders: smp builds them with
``timm.create_model(name, features_only=True, out_indices=range(depth), **kwargs)``. Unet and FPN on one small model
of each family that fits smp's stride pattern, forward and backward; the others fail to build, in smp's check."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import timm
import torch

import densebackbones  # noqa: F401  (registers the backbones with timm, as a user's code must before smp)

# Families that are smp encoders: one registered model each, made small by its own constructor arguments (smp
# passes extra keyword arguments on to timm.create_model).
TINY = {
    "densenet_bc121_k32": dict(growth_rate=4, block_config=(1, 2, 1, 1), stem_width=8),
    "condensenet74_c4_g4": dict(growth_rate=(4, 4, 4, 4, 4), block_config=(1, 1, 1, 2, 1)),
    "peleenet": dict(growth_rate=8, block_config=(1, 1, 1, 1), stem_width=8),  # its stem's stride-2 map: level 0
}
# Those that are not: smp's TimmUniversalEncoder takes feature strides (2, 4, 8, 16, 32), (4, 8, 16, 32) or
# (1, 2, 4, 8, 16, 32) only, read from the default ``features_only`` levels before it applies any argument of ours.
NOT_ENCODERS = {
    "dsod_ds64_192_48_1": [2, 8, 16, 16],  # DSOD: stride 16 at the end, by design (the paper's detector backbone)
    "msdnet_imagenet": [32] * 5,  # features_only: one scale per block (feature_scale=-1, the coarsest)
    "densenet_bc100_k12_cifar": [1, 1, 2, 4],  # CIFAR layouts: stride 4 at the end
}


@pytest.mark.parametrize("decoder", ["Unet", "FPN"])
@pytest.mark.parametrize("name", list(TINY))
def test_tu_encoder_forward_and_backward(name, decoder):
    net = getattr(smp, decoder)(f"tu-{name}", encoder_weights=None, classes=3, **TINY[name])
    assert net.encoder.model.feature_info.reduction() == [2, 4, 8, 16, 32]
    x = torch.randn(2, 3, 64, 96)
    out = net.train()(x)
    assert out.shape == (2, 3, 64, 96)
    out.mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without a gradient: {no_grad[:5]}"
    with torch.no_grad():
        assert net.eval()(x[:1]).shape == (1, 3, 64, 96)


@pytest.mark.parametrize("name", list(NOT_ENCODERS))
def test_families_that_are_not_encoders_fail_to_build(name):
    """These fail in smp's own check, with smp's message, which names neither the model nor its strides
    (docs/timm_suite.md, "Clients"); a change of their feature strides shows here first."""
    with torch.device("meta"):
        assert timm.create_model(name, features_only=True).feature_info.reduction() == NOT_ENCODERS[name]
    with pytest.raises(ValueError, match="Unsupported model downsampling pattern"):
        smp.Unet(f"tu-{name}", encoder_weights=None, classes=3)

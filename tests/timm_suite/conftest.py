"""The timm suite runner's settings: timm's markers, timm's TorchScript flags around its tests, and the tests and
models too slow for CI, which are marked ``slow`` (docs/timm_suite.md gives their times)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent

# The markers timm's test_models.py uses (registered in timm's pyproject.toml, not ours); pytest-timeout is not
# installed, so its `timeout` marks have no effect.
TIMM_MARKERS = (
    "base",
    "forward",
    "backward",
    "cfg",
    "cfg_nonstd",
    "torchscript",
    "features",
    "fxforward",
    "fxbackward",
    "timeout",
)

# Marked slow, so not run by CI (`-m slow` or `-m ''` selects them; docs/timm_suite.md has the times):
# - timm's test_prune_intermediate_layers_contract, which prunes every model at every feature index (timm's own CI
#   leaves it out too: "no marker, slow"); 453 s of the first run's 933 s.
# - the largest layouts, each of which has a smaller sibling of the same class, stem and layers in CI:
#   densenet_bc264_k48 / bc264_k32 / bc232_k48 / bc201_k32 / bc161_k48 (CI: bc121_k32, bc169_k32), densenet_bc250_k24
#   and bc190_k40 CIFAR (CI: densenet_bc100_k12_cifar, wide_densenet_bc40_*), densenet100_k24_cifar (CI:
#   densenet100_k12_cifar, densenet40_k12_cifar), condensenet182_cifar(_converted) (CI: condensenet86_cifar*).
#   msdnet_imagenet stays: it is MSDNet's only ImageNet layout.
SLOW_TESTS = {"test_prune_intermediate_layers_contract"}
SLOW_MODELS = {
    "densenet_bc264_k48",
    "densenet_bc264_k32",
    "densenet_bc232_k48",
    "densenet_bc201_k32",
    "densenet_bc161_k48",
    "densenet_bc250_k24_cifar",
    "densenet_bc190_k40_cifar",
    "densenet100_k24_cifar",
    "condensenet182_cifar",
    "condensenet182_cifar_converted",
}


def pytest_configure(config):
    for name in TIMM_MARKERS:
        config.addinivalue_line("markers", f"{name}: timm's own marker (tests/timm_suite runs timm's model tests)")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE not in Path(item.path).parents:
            continue
        model = getattr(getattr(item, "callspec", None), "params", {}).get("model_name")
        if model is not None and (item.originalname in SLOW_TESTS or model.partition(".")[0] in SLOW_MODELS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _timm_jit_flags(request):
    """timm's module sets the profiling executor on and profiling mode off at import, for the whole process; the
    runner restored the defaults and this sets timm's values for timm's tests only."""
    flags = getattr(request.module, "TIMM_JIT_FLAGS", None)
    if flags is None or not request.node.name.startswith("test_model"):
        yield
        return
    prev = torch._C._jit_set_profiling_executor(flags[0]), torch._C._jit_set_profiling_mode(flags[1])
    try:
        yield
    finally:
        torch._C._jit_set_profiling_executor(prev[0])
        torch._C._jit_set_profiling_mode(prev[1])

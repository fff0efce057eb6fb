"""Memory-efficient mode equals the plain mode: outputs, gradients and BatchNorm running statistics (float64)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_densenet

import densebackbones as db
import densebackbones.layers
from densebackbones.layers import memory_efficient


def _pair(**kwargs):
    plain = tiny_densenet(**kwargs).double()
    efficient = copy.deepcopy(plain)
    efficient.set_grad_checkpointing(True)
    return plain, efficient


def _step(model, x, seed=0):
    torch.manual_seed(seed)  # same dropout masks in both models
    x = x.clone().requires_grad_()
    out = model(x)
    out.pow(2).sum().backward()
    return out, x.grad


def _bn_buffers(model):
    return {k: v for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("proj_drop_rate", [0.0, 0.2], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("bn_size", [4, None], ids=["bottleneck", "basic"])
def test_training_step_equals_plain(proj_drop_rate, bn_size):
    plain, efficient = _pair(proj_drop_rate=proj_drop_rate, bn_size=bn_size, block_config=(3, 2))
    plain.train(), efficient.train()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    out_p, grad_p = _step(plain, x)
    out_e, grad_e = _step(efficient, x)
    torch.testing.assert_close(out_e, out_p)
    torch.testing.assert_close(grad_e, grad_p)
    for (name, p), q in zip(plain.named_parameters(), efficient.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=f"gradient of {name}")
    buffers_p, buffers_e = _bn_buffers(plain), _bn_buffers(efficient)
    for name in buffers_p:
        torch.testing.assert_close(buffers_e[name], buffers_p[name], msg=f"buffer {name}")
    assert int(buffers_e["features.denseblock1.denselayer1.norm1.num_batches_tracked"]) == 1


def test_running_stats_would_update_twice_without_the_guard(monkeypatch):
    # The guard is what makes the equality above hold: a plain checkpoint re-runs BN in training mode.
    plain, efficient = _pair()
    plain.train(), efficient.train()
    monkeypatch.setattr(memory_efficient._FirstCallUpdatesStats, "__call__", lambda self, *inputs: self.fn(*inputs))
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    _step(plain, x), _step(efficient, x)
    assert int(efficient.features.denseblock1.denselayer1.norm1.num_batches_tracked) == 2
    assert not torch.allclose(
        efficient.features.denseblock1.denselayer1.norm1.running_var,
        plain.features.denseblock1.denselayer1.norm1.running_var,
    )


def test_eval_and_no_grad_equal_plain():
    plain, efficient = _pair()
    warmup = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    for model in (plain, efficient):
        model.train()
        _step(model, warmup)  # non-trivial running statistics
        model.eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(efficient(x), plain(x))
    out_p, grad_p = _step(plain, x)  # eval mode with gradients (e.g. saliency maps)
    out_e, grad_e = _step(efficient, x)
    torch.testing.assert_close(out_e, out_p)
    torch.testing.assert_close(grad_e, grad_p)


def test_flag_and_set_grad_checkpointing_switch_every_layer():
    model = db.create_model("densenet_bc100_k12_cifar", memory_efficient=True)
    layers = [m for m in model.modules() if isinstance(m, db.layers.DenseLayer)]
    assert len(layers) == 48 and all(layer.grad_checkpointing for layer in layers)
    model.set_grad_checkpointing(False)
    assert not any(layer.grad_checkpointing for layer in layers)


def test_memory_efficient_state_dict_keys_equal_plain():
    plain = db.create_model("densenet_bc121_k32")
    efficient = db.create_model("densenet_bc121_k32", memory_efficient=True)
    assert list(plain.state_dict()) == list(efficient.state_dict())

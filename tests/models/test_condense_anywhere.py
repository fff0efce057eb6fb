"""CondenseNet outside densebackbones' trainer (issue 34): a plain loop (timm's train.py, Lightning: any loop that
only calls forward and backward) condenses it exactly as the engine's ``set_training_progress`` hook does, given
``condense_steps``; without either a training forward warns instead of never condensing in silence; EMA and SWA
copies that average buffers (timm's ModelEmaV3, torch's AveragedModel) keep the live model's structure."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn
from timm.utils import ModelEmaV3
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from densebackbones.layers import MEMORY_MODES
from densebackbones.models.condensenet import CondenseNet, convert

STEPS = 24  # condensation runs over the first half: stages rise at steps 4, 8 and 12 (C = 4)


def tiny(**kwargs) -> CondenseNet:
    torch.manual_seed(0)
    args = dict(block_config=(2, 2), growth_rate=(4, 8), num_classes=3, stem_type="cifar", proj_drop_rate=0.1)
    return CondenseNet(**dict(args, **kwargs))


def batches(count: int):
    generator = torch.Generator().manual_seed(1)
    for _ in range(count):
        yield torch.randn(4, 3, 8, 8, generator=generator), torch.randint(0, 3, (4,), generator=generator)


def structure(model: nn.Module) -> list[tuple[torch.Tensor, int, int]]:
    """Each learned group convolution's effective mask, stage and dropped count."""
    return [(conv._mask.floor(), conv.stage, conv.dropped) for conv in model.learned_convs()]


def assert_same_structure(a: nn.Module, b: nn.Module) -> None:
    for (mask_a, stage_a, count_a), (mask_b, stage_b, count_b) in zip(structure(a), structure(b)):
        assert (stage_a, count_a) == (stage_b, count_b)
        assert torch.equal(mask_a, mask_b)


def train(model: CondenseNet, hook: bool, forward=lambda m, x: m(x), each_step=None) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for step, (x, y) in enumerate(batches(STEPS)):
        if hook:  # what densebackbones' trainer does before each step
            model.set_training_progress(step / STEPS)
        torch.manual_seed(step)  # the same dropout draws in both runs
        loss = nn.functional.cross_entropy(forward(model, x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if each_step is not None:
            each_step(model)


@pytest.mark.parametrize("memory_mode", MEMORY_MODES)
def test_a_plain_loop_condenses_exactly_as_the_engine_hook(memory_mode):
    by_hook, by_itself = tiny(memory_mode=memory_mode), tiny(memory_mode=memory_mode, condense_steps=STEPS)
    train(by_hook, hook=True)
    train(by_itself, hook=False)
    assert all(conv.condensed for conv in by_itself.learned_convs())
    assert int(by_itself.condense_forwards) == STEPS
    assert_same_structure(by_hook, by_itself)
    theirs = by_itself.state_dict()
    assert set(theirs) - set(by_hook.state_dict()) == {"condense_forwards"}
    for name, value in by_hook.state_dict().items():
        assert torch.equal(value, theirs[name]), name  # the same masks, hence the same training, bit for bit


def test_a_backbone_used_through_forward_intermediates_condenses_too():
    # features_only and segmentation/detection heads call forward_intermediates, not forward
    by_hook, by_itself = tiny(), tiny(condense_steps=STEPS)

    def features(model, x):
        return model.forward_intermediates(x, intermediates_only=True)[-1].mean((2, 3))[:, :3]

    train(by_hook, hook=True, forward=features)
    train(by_itself, hook=False, forward=features)
    assert_same_structure(by_hook, by_itself)
    assert all(conv.condensed for conv in by_itself.learned_convs())


def test_training_without_progress_warns_and_the_hook_or_eval_does_not():
    model = tiny()
    with pytest.warns(UserWarning, match="never condense: create it with condense_steps"):
        model(torch.randn(2, 3, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.eval()(torch.randn(2, 3, 8, 8))  # evaluation: nothing to condense
        model.train()
        model.set_training_progress(0.0)
        model(torch.randn(2, 3, 8, 8))


def test_the_forward_count_resumes_and_old_weights_load():
    model = tiny(condense_steps=STEPS)
    train(model, hook=False)
    resumed = tiny(condense_steps=STEPS)
    resumed.load_state_dict(model.state_dict())
    assert int(resumed.condense_forwards) == STEPS
    old = tiny().state_dict()  # weights without a count (a model built without condense_steps)
    fresh = tiny(condense_steps=STEPS)
    fresh.load_state_dict(old)  # strict: the count is this model's
    assert int(fresh.condense_forwards) == 0
    # and the other way: weights trained with condense_steps (timm's train.py) into a model without them
    plain = tiny()
    plain.load_state_dict(model.state_dict())
    assert not hasattr(plain, "condense_forwards")
    assert_same_structure(plain, model)


AVERAGERS = {
    "timm ModelEmaV3": lambda model: ModelEmaV3(model, decay=0.9),
    "torch AveragedModel EMA": lambda model: AveragedModel(
        model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True
    ),
    "torch AveragedModel SWA": lambda model: AveragedModel(model, use_buffers=True),
}


@pytest.mark.parametrize("averager", AVERAGERS)
def test_averaged_copies_keep_the_live_models_structure(averager):
    # Their defaults average every floating buffer: masks became fractions (6 of 6) and the stage 1.45 of 3.
    model = tiny(condense_steps=STEPS)
    average = AVERAGERS[averager](model)
    seen_fractions = []

    def update(live):
        average.update(live) if isinstance(average, ModelEmaV3) else average.update_parameters(live)
        copy_ = average.module
        seen_fractions.append(any(not torch.equal(c._mask, c._mask.round()) for c in copy_.learned_convs()))
        assert_same_structure(live, copy_)

    train(model, hook=False, each_step=update)
    assert any(seen_fractions)  # the averager did average the buffers: the copy restores the structure itself
    deployed, deployed_average = convert(model), convert(copy.deepcopy(average.module))
    for (name, a), b in zip(deployed.state_dict().items(), deployed_average.state_dict().values()):
        if name.endswith("conv_1.index"):  # the classifier keeps the features of largest (averaged) weight
            assert torch.equal(a, b), name
    # and a checkpoint of the average loads as whole numbers
    loaded = tiny(condense_steps=STEPS)
    loaded.load_state_dict(average.module.state_dict())
    assert all(torch.equal(c._mask, c._mask.round()) for c in loaded.learned_convs())


def test_a_loop_that_forgets_the_group_lasso_is_told():
    model = tiny(condense_steps=STEPS, group_lasso_lambda=1e-5)
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):  # a loop that adds the term: no warning
            (model(x).sum() + model.regularization_loss()).backward()
    model = tiny(condense_steps=STEPS, group_lasso_lambda=1e-5)
    model(x).sum().backward()
    with pytest.warns(UserWarning, match=r"trains without its group lasso: add model.regularization_loss\(\)"):
        model(x).sum().backward()

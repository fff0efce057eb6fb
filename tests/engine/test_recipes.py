"""Modern training recipes (issue 36, item 2) on the field's own implementations: timm's RandAugment, AutoAugment,
AugMix, random erasing, Mixup/CutMix, BCE, RMSpropTF and LAMB; torchvision's CIFAR AutoAugment policy,
TrivialAugment and Cutout (RandomErasing); repeated augmentation in the resumable sampler; train/test resolution.
Each option: the same seed gives the same augmented batch, and the option does what it says."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_training_tool
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from densebackbones.data import ArrayDataset, AugmentOptions, build_eval_transform, build_train_transform
from densebackbones.engine.config import DEFAULTS, check_config, load_config
from densebackbones.engine.elastic import ResumableDistributedSampler, SampleSeeded
from densebackbones.engine.optim import build_optimizer, build_scheduler
from densebackbones.tasks.classification import ClassificationTask, ExitsCrossEntropy, mixup_collate
from densebackbones.tasks.segmentation import SegmentationTask

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import train_cls  # noqa: E402

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
ALL_ON = AugmentOptions(auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.5, cutout=8)


def _images(count: int = 8, size: int = 32, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, size, size, channels), dtype=np.uint8)
    return images, rng.integers(0, 10, count)


def _cfg(**data) -> dict:
    data = dict(ClassificationTask.data_defaults, **dict(dict(dataset="cifar10"), **data))
    cfg = {"data": data, "train": dict(DEFAULTS["train"])}
    cfg["model"] = {"type": "densenet_bc100_k12_cifar"}
    return cfg


def _batch(options: AugmentOptions, seed: int, mixup_cfg: dict | None = None, workers: int = 0, augment="plus"):
    images, labels = _images()
    transform = build_train_transform(augment, 32, MEAN, STD, native_size=32, options=options)
    dataset = SampleSeeded(ArrayDataset(images, labels, transform))
    sampler = ResumableDistributedSampler(dataset, 1, 0, seed=seed)
    collate = mixup_collate(_cfg(**mixup_cfg), 10) if mixup_cfg else None
    loader = DataLoader(dataset, batch_size=8, sampler=sampler, num_workers=workers, collate_fn=collate)
    return next(iter(loader))


@pytest.mark.parametrize(
    "options",
    [
        ALL_ON,
        AugmentOptions(auto_augment="original"),
        AugmentOptions(auto_augment="augmix-m5-w4-d2"),
        AugmentOptions(auto_augment="cifar10", cutout=16),
        AugmentOptions(auto_augment="ta_wide", re_prob=1.0, re_mode="rand", re_count=3),
    ],
    ids=["randaugment-erasing-cutout", "autoaugment", "augmix", "cifar-autoaugment-cutout", "trivialaugment"],
)
def test_the_same_seed_gives_the_same_augmented_batch_and_another_seed_another(options):
    first, again, other = _batch(options, 0), _batch(options, 0), _batch(options, 1)
    torch.testing.assert_close(first[0], again[0], rtol=0, atol=0)
    assert not torch.equal(first[0], other[0])
    plain = _batch(AugmentOptions(), 0)
    assert not torch.equal(first[0], plain[0])  # the options change the images


@pytest.mark.integration
def test_loader_workers_augment_as_the_main_process_does():
    mixup = dict(mixup_alpha=0.4, cutmix_alpha=1.0)
    main, worker = _batch(ALL_ON, 3, mixup, workers=0), _batch(ALL_ON, 3, mixup, workers=1)
    torch.testing.assert_close(main[0], worker[0], rtol=0, atol=0)
    torch.testing.assert_close(main[1], worker[1], rtol=0, atol=0)


def test_mixup_targets_are_label_distributions_with_the_smoothing():
    images, targets = _batch(AugmentOptions(), 0, dict(mixup_alpha=0.4, cutmix_alpha=1.0, mixup_prob=1.0))
    plain_images, labels = _batch(AugmentOptions(), 0)
    assert targets.shape == (8, 10) and targets.dtype == torch.float32
    torch.testing.assert_close(targets.sum(1), torch.ones(8))
    assert not torch.equal(images, plain_images)
    mixed_from = {(i, int(labels[i])) for i in range(8)} | {(i, int(labels.flip(0)[i])) for i in range(8)}
    assert {(i, int(c)) for i, c in torch.nonzero(targets > 1e-6).tolist()} <= mixed_from  # own and partner's class
    cfg = _cfg(mixup_alpha=0.2)
    cfg["train"]["label_smoothing"] = 0.1
    smoothed = mixup_collate(cfg, 10)([(torch.zeros(3, 4, 4), 3), (torch.zeros(3, 4, 4), 3)])[1]
    torch.testing.assert_close(smoothed[0], torch.full((10,), 0.01) + 0.9 * torch.eye(10)[3])
    assert ClassificationTask().loss_fn(cfg).label_smoothing == 0.0  # the targets carry it, not the loss


def test_mixup_refuses_odd_batches_and_multilabel_data():
    collate = mixup_collate(_cfg(cutmix_alpha=1.0), 10)
    with pytest.raises(ValueError, match=r"need an even one, got 3 images: make data.batch_size / \(processes"):
        collate([(torch.zeros(3, 4, 4), 1)] * 3)
    with pytest.raises(ValueError, match="multilabel_csv's images have several labels"):
        mixup_collate(_cfg(dataset="multilabel_csv", mixup_alpha=0.2), 10)


def test_mixup_is_refused_by_the_other_tasks_naming_whose_option_it_is():
    raw = {"model": {"type": "fc_densenet56"}, "data": {"dataset": "shapes", "mixup_alpha": 0.2}}
    task = SegmentationTask()
    with pytest.raises(KeyError, match="config key data.mixup_alpha is not used: it is a classification option"):
        check_config(raw, task.model_arg_names(raw), task.data_defaults, task.data_choices)


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_soft_and_hard_targets_give_the_losses_of_their_definitions(loss):
    torch.manual_seed(0)
    logits, soft = torch.randn(4, 5), torch.softmax(torch.randn(4, 5), 1)
    criterion = ExitsCrossEntropy(bce=loss == "bce", label_smoothing=0.0)
    if loss == "ce":
        expected = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    else:  # timm's BinaryCrossEntropy: per-class BCE, averaged over the elements
        expected = nn.functional.binary_cross_entropy_with_logits(logits, soft)
    torch.testing.assert_close(criterion(logits, soft), expected)
    hard = torch.tensor([0, 3, 1, 4])
    torch.testing.assert_close(criterion(logits, hard), criterion(logits, nn.functional.one_hot(hard, 5).float()))


def test_randaugment_at_the_largest_magnitude_runs_on_grey_and_colour_images():
    # timm asks Pillow for posterize(bits=0) at magnitude 10, which Pillow 13 refuses: one bit is kept instead
    for channels in (1, 3):
        images, labels = _images(16, 16, channels)
        transform = build_train_transform(
            "plus", 16, MEAN[:channels], STD[:channels], options=AugmentOptions(auto_augment="rand-m10-n4-mstd0-inc1")
        )
        torch.manual_seed(0)
        for image in images:
            assert transform(torch.from_numpy(image).permute(2, 0, 1)).shape == (channels, 16, 16)


def test_timms_own_transform_at_the_largest_magnitude_runs_with_the_one_bit_fix():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    options = AugmentOptions(auto_augment="rand-m10-n4-mstd0-inc1")
    transform = build_train_transform("timm", 32, MEAN, STD, options=options)
    torch.manual_seed(0)
    for _ in range(30):
        assert transform(image).shape == (3, 32, 32)


def test_cutout_zeroes_one_square_of_the_given_side():
    transform = build_train_transform("none", 32, MEAN, STD, options=AugmentOptions())
    cut = build_train_transform("shift", 32, MEAN, STD, options=AugmentOptions(cutout=8))
    image = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    torch.manual_seed(0)
    out = cut(image)
    zero = (out == 0).all(0)  # the normalised image is (200/255 - 0.5)/0.25 elsewhere: only the square is 0
    rows, cols = torch.nonzero(zero, as_tuple=True)
    assert zero.sum() == 64 and rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7
    assert transform(image).shape == out.shape


def test_test_resolution_and_crop_fraction_as_timm_defines_them():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 500, 3), dtype=np.uint8))
    options = AugmentOptions(test_size=288, test_crop_pct=0.95, interpolation="bicubic")
    ours = build_eval_transform("imagenet", 224, MEAN, STD, options=options)(image)
    from timm.data import create_transform

    theirs = create_transform(288, is_training=False, crop_pct=0.95, interpolation="bicubic", mean=MEAN, std=STD)
    assert ours.shape == (3, 288, 288)
    # timm resizes PIL images with PIL, ours with torchvision's tensor kernel: equal up to resampling rounding
    assert (ours - theirs(image)).abs().mean() < 0.02
    assert build_eval_transform("imagenet", 224, MEAN, STD)(image).shape == (3, 224, 224)  # 256 -> 224 as before


def test_the_timm_recipe_is_timms_own_training_transform():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    timm_options = AugmentOptions(auto_augment=ALL_ON.auto_augment, re_prob=0.5)  # Cutout is not timm's
    ours = build_train_transform("timm", 48, MEAN, STD, options=timm_options)
    from timm.data import create_transform

    theirs = create_transform(48, is_training=True, auto_augment=ALL_ON.auto_augment, mean=MEAN, std=STD,
                              re_prob=0.5, re_mode="pixel")  # fmt: skip
    assert str(ours.transforms[1]) == str(theirs)  # after the conversion of tensors to PIL images
    with pytest.raises(ValueError, match=r"data.auto_augment='ta_wide' \(torchvision's\) is not part of timm's"):
        build_train_transform("timm", 48, MEAN, STD, options=AugmentOptions(auto_augment="ta_wide"))
    with pytest.raises(ValueError, match=r"data.cutout is not part of timm's transform"):
        build_train_transform("timm", 48, MEAN, STD, options=AugmentOptions(cutout=8))
    with pytest.raises(ValueError, match=r"auto_augment='rand-q9': timm cannot parse it"):
        AugmentOptions(auto_augment="rand-q9")
    torch.manual_seed(0)
    assert ours(image).shape == (3, 48, 48)


def test_repeated_augmentation_draws_each_image_several_times_with_its_own_seeds():
    data = list(range(12))
    sampler = ResumableDistributedSampler(data, 2, 0, seed=0, repeats=3)
    other = ResumableDistributedSampler(data, 2, 1, seed=0, repeats=3)
    ranks = [list(sampler), list(other)]
    assert len(ranks[0]) == len(ranks[1]) == 6
    merged = [pair for step in zip(*ranks) for pair in step]
    indices = [index for index, _ in merged]
    assert len(set(indices)) == 4 and all(indices.count(i) == 3 for i in set(indices))
    assert len({seed for _, seed in merged}) == 12  # every copy augmented differently
    sampler.set_start(2)
    assert list(sampler) == ranks[0][2:]  # a resumed epoch continues exactly
    with pytest.raises(ValueError, match="train.repeated_aug=0 must be at least 1"):
        ResumableDistributedSampler(data, 1, 0, repeats=0)


@pytest.mark.parametrize("kind", ["RMSpropTF", "LAMB"])
def test_timms_optimizers_and_the_no_decay_groups(kind):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    cfg = dict(DEFAULTS["optimizer"], type=kind, lr=0.016, base_batch_size=256, eps=1e-3, weight_decay=1e-5,
               decay_norm_and_bias=False)  # fmt: skip
    optimizer = build_optimizer(model, cfg, 512)
    assert type(optimizer).__name__ == {"RMSpropTF": "RMSpropTF", "LAMB": "Lamb"}[kind]
    decays = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decays[id(model[0].weight)] == 1e-5 and decays[id(model[0].bias)] == decays[id(model[1].weight)] == 0.0
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.032)


def test_step_schedule_decays_every_decay_epochs():
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = build_scheduler(optimizer, dict(DEFAULTS["schedule"], type="step", epochs=10, decay_epochs=2.5,
                                                gamma=0.5), iters_per_epoch=4)  # fmt: skip
    rates = []
    for _ in range(30):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[9] == 1.0 and rates[10] == 0.5 and rates[19] == 0.5 and rates[20] == 0.25


@pytest.mark.parametrize(
    "config",
    sorted(p.name for p in (REPO / "configs" / "cls").glob("*_ra.py"))
    + ["densenet_bc100_k12_cifar10_autoaugment.py", "densenet_bc100_k12_fashion_mnist_modern.py"],
)
def test_the_modern_recipe_configs_validate(config):  # fmt: skip
    raw = load_config(REPO / "configs" / "cls" / config).to_dict()
    task = ClassificationTask()
    check_config(raw, task.model_arg_names(raw), task.data_defaults, task.data_choices)


@pytest.mark.integration
def test_a_modern_recipe_trains_and_resumes_exactly(tmp_path):
    from densebackbones.engine import load_checkpoint

    config = str(REPO / "configs" / "cls" / "densenet_bc_digits.py")
    options = ("model.block_config=(1,1,1)", "model.growth_rate=4", "data.auto_augment='rand-m9-mstd0.5-inc1'",
               "data.re_prob=0.3", "data.cutout=3", "data.mixup_alpha=0.4", "data.cutmix_alpha=1.0",
               "data.loss='bce'", "train.label_smoothing=0.1", "train.repeated_aug=2", "optimizer.type='RMSpropTF'",
               "optimizer.lr=0.01", "optimizer.decay_norm_and_bias=False", "schedule.type='step'",
               "schedule.decay_epochs=0.5", "train.max_iters_per_epoch=3")  # fmt: skip
    run_training_tool(train_cls, config, tmp_path / "whole", "schedule.epochs=2", *options)
    run_training_tool(train_cls, config, tmp_path / "split", "schedule.epochs=1", *options)
    run_training_tool(train_cls, config, tmp_path / "split", "schedule.epochs=2", *options, extra=("--resume", "auto"))
    whole, split = load_checkpoint(tmp_path / "whole" / "last.pth"), load_checkpoint(tmp_path / "split" / "last.pth")
    for name, value in whole["model"].items():
        torch.testing.assert_close(split["model"][name], value, rtol=0, atol=0, msg=name)


@pytest.mark.integration
def test_a_bad_recipe_option_is_refused_before_overwrite_deletes_the_earlier_run(tmp_path):
    config = str(REPO / "configs" / "cls" / "densenet_bc_digits.py")
    tiny = ("model.block_config=(1,1,1)", "model.growth_rate=4", "schedule.epochs=1", "train.max_iters_per_epoch=1")
    run_training_tool(train_cls, config, tmp_path / "run", *tiny)
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    for bad, message in (("data.auto_augment='rand-q9'", "timm cannot parse it"),
                         ("data.mixup_alpha=0.2", r"need an even one: data.batch_size=63")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            run_training_tool(train_cls, config, tmp_path / "run", *tiny, bad, "data.batch_size=63",
                              extra=("--overwrite",))  # fmt: skip
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before

"""FC-DenseNet, the decoder on backbones, CamVid-layout data, mIoU, and tools/train_seg.py / predict_seg.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from densebackbones.heads import (
    DenseSegmentor,
    FCDenseNet,
)
from helpers import run_training_tool
from PIL import Image

import densebackbones as db
from densebackbones.data.segmentation import SEGMENTATION_DATASETS, SegmentationFolder, write_shapes_dataset
from densebackbones.engine import load_checkpoint
from densebackbones.tasks.metrics import SegmentationMetric

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import predict_seg  # noqa: E402
import train_seg  # noqa: E402

SHAPES_CFG = str(REPO / "configs/seg/fc_densenet_shapes.py")


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "millions"), [("fc_densenet56", 1.377), ("fc_densenet67", 3.463), ("fc_densenet103", 9.322)]
)
def test_trainable_parameters_match_reference(name, millions):
    with torch.device("meta"):
        model = db.create_model(name)
    assert round(count(model) / 1e6, 3) == millions  # docs/reference.md, computed with conv biases


def test_fc_densenet103_widths():
    with torch.device("meta"):
        model = db.create_model("fc_densenet103")
    assert [i["num_chs"] for i in model.encoder.feature_info] == [112, 192, 304, 464, 656, 656]
    # up-path block widths (input + new maps): 1088, 816, 576, 384, 256
    widths = [t.conv.out_channels + skip for t, skip in zip(model.decoder.transitions_up, [656, 464, 304, 192, 112])]
    widths = [w + b.num_layers * b.growth_rate for w, b in zip(widths, model.decoder.blocks)]
    assert widths == [1088, 816, 576, 384, 256]
    assert model.decoder.bottleneck.num_layers == 15 and model.encoder.first_conv.out_channels == 48


@pytest.mark.parametrize("size", [(360, 480), (361, 479), (224, 224), (97, 131)])
def test_any_input_size_gives_logits_of_that_size(size):
    model = db.create_model("fc_densenet56", growth_rate=4, layers_per_block=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 11, *size)


def test_fc_densenet103_odd_size():
    model = db.create_model("fc_densenet103").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 97, 131)).shape == (1, 11, 97, 131)


def test_too_small_input():
    model = db.create_model("fc_densenet56", growth_rate=4, layers_per_block=1)
    with pytest.raises(ValueError, match="fc_densenet56 takes inputs of at least 32x32 px .*5 poolings.*got 31x64"):
        model(torch.randn(1, 3, 31, 64))


def test_first_convolution_runs_in_the_blocks_layout():
    # On the CPU the dense blocks compute in channels_last; the encoder converts the 3-channel input so that its
    # first convolution does too. Same values either way.
    model = db.create_model("fc_densenet56", growth_rate=4, layers_per_block=1).eval()
    x = torch.randn(1, 3, 32, 32)
    seen = []
    model.encoder.first_conv.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        out = model(x)
        db.layers.set_cpu_channels_last(model, False)
        reference = model(x)
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    assert seen[1].is_contiguous()
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def test_gradient_reaches_every_parameter():
    model = db.create_model("fc_densenet56", growth_rate=4, layers_per_block=(1, 2, 1, 2, 1, 2, 1))
    out = model(torch.randn(2, 3, 40, 36))
    out.square().mean().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]


@pytest.mark.parametrize(
    ("encoder", "kwargs"),
    [
        ("densenet_bc121_k32", dict(growth_rate=4, block_config=(1, 1, 1, 1))),
        ("densenet_bc100_k12_cifar", dict(growth_rate=4, block_config=(1, 1, 1))),
    ],
)
def test_decoder_on_two_backbones(encoder, kwargs):
    model = DenseSegmentor(encoder, 5, encoder_kwargs=kwargs, growth_rate=4, layers_per_block=1)
    x = torch.randn(2, 3, 67, 45)
    out = model(x)
    assert out.shape == (2, 5, 67, 45)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert len(model.decoder.transitions_up) == len(model.encoder.feature_info) - 1


def test_decoder_rejects_unsupported_strides():
    from densebackbones.heads import FCDenseNetDecoder

    with pytest.raises(ValueError, match="must double or stay equal"):
        FCDenseNetDecoder([8, 16], [1, 4], 3)


def test_batch_statistics_at_test_time():
    model = db.create_model("fc_densenet56", growth_rate=4, layers_per_block=1, drop_rate=0.0)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    with torch.no_grad():
        expected = model(x)
    running = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    model.eval()
    model.batch_stats_at_test = True
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in running.items())
    assert not model.training and not any(m.training for m in model.modules())
    model.batch_stats_at_test = False
    with torch.no_grad():
        assert not torch.allclose(model(x), expected)


def test_registry_and_mmengine():
    assert db.list_models(task="segmentation", filter="fc_*")[:3] == [
        "fc_densenet103",
        "fc_densenet56",
        "fc_densenet67",
    ]
    assert db.list_models(task="segmentation", filter="dense_aspp*") == [f"dense_aspp{d}" for d in (121, 161, 169, 201)]
    with pytest.raises(ValueError, match="Closest registered names: fc_densenet103"):
        db.create_model("fc_densenet13")
    model = db.MODELS.build(dict(type="densebackbones.fc_densenet56", num_classes=4, growth_rate=4, layers_per_block=1))
    assert isinstance(model, FCDenseNet) and model.num_classes == 4


# ---------------------------------------------------------------------------------------------------------- metric
def test_miou_against_hand_computed_confusion():
    metric = SegmentationMetric(3, ignore_index=255)
    # image 1 has no class 2 in its labels; 255 is void in both images
    truth = torch.tensor([[[0, 0, 1, 255]], [[1, 2, 2, 255]]])
    preds = torch.tensor([[[0, 0, 1, 2]], [[1, 2, 0, 0]]])
    metric.update(preds[:1], truth[:1])
    metric.update(preds[1:], truth[1:])
    out = metric.compute()
    # confusion (rows truth, columns prediction): c0 [2, 0, 0]; c1 [0, 2, 0]; c2 [1, 0, 1]
    # IoU: c0 2 / (2 + 1) ; c1 2 / 2 ; c2 1 / (2 + 0) ; global 5 / 6
    assert out["IoU_0"] == pytest.approx(200 / 3)
    assert out["IoU_1"] == pytest.approx(100)
    assert out["IoU_2"] == pytest.approx(50)
    assert out["mIoU"] == pytest.approx((200 / 3 + 100 + 50) / 3)
    assert out["global_acc"] == pytest.approx(100 * 5 / 6)
    # Accumulated over the data set, not averaged per image (per image: 100 and 50, mean 75).
    per_image = []
    for i in range(2):
        single = SegmentationMetric(3, 255)
        single.update(preds[i : i + 1], truth[i : i + 1])
        per_image.append(single.compute()["mIoU"])
    assert per_image == pytest.approx([100, 50])
    assert out["mIoU"] != pytest.approx(sum(per_image) / 2)


def test_class_absent_everywhere_is_left_out_of_the_mean():
    metric = SegmentationMetric(4, ignore_index=255)
    metric.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 1]]]))
    out = metric.compute()
    # IoU of the absent class is undefined: reported as -100 (never NaN), left out of the mean (docs/evaluation.md)
    assert out["mIoU"] == 100.0 and out["IoU_2"] == out["IoU_3"] == -100.0


# ------------------------------------------------------------------------------------------------------------ data
def _write_camvid(root: Path, count: int = 3, size=(36, 48)) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / split / f"0001TP_{i:06d}.png")
            labels = rng.integers(0, 12, size, dtype=np.uint8)  # 0..10 classes, 11 void
            Image.fromarray(labels).save(root / f"{split}annot" / f"0001TP_{i:06d}.png")
    return root


def test_camvid_loader(tmp_path):
    root = _write_camvid(tmp_path / "CamVid")
    info = SEGMENTATION_DATASETS["camvid"]
    assert info.num_classes == 11 and info.ignore_index == 11 and info.classes[0] == "sky"
    dataset = SegmentationFolder(root, "val", info)
    image, mask = dataset[1]
    assert image.shape == (3, 36, 48) and mask.shape == (36, 48) and mask.dtype == torch.int64
    assert int(mask.max()) <= 11


def test_bad_labels_are_named(tmp_path):
    root = _write_camvid(tmp_path / "CamVid")
    info = SEGMENTATION_DATASETS["camvid"]
    bad = root / "trainannot" / "0001TP_000001.png"
    Image.fromarray(np.full((36, 48), 17, dtype=np.uint8)).save(bad)
    with pytest.raises(ValueError, match=r"0001TP_000001.png has label values \[17\]"):
        SegmentationFolder(root, "train", info)[1]
    Image.fromarray(np.zeros((30, 48), dtype=np.uint8)).save(bad)
    with pytest.raises(ValueError, match=r"image .*0001TP_000001.png is \(36, 48\) but its labels"):
        SegmentationFolder(root, "train", info)[1]


def test_empty_and_missing_splits(tmp_path):
    info = SEGMENTATION_DATASETS["camvid"]
    (tmp_path / "c" / "val").mkdir(parents=True)
    (tmp_path / "c" / "valannot").mkdir()
    with pytest.raises(ValueError, match=r"split 'val' is empty: .*c/val"):
        SegmentationFolder(tmp_path / "c", "val", info)
    with pytest.raises(FileNotFoundError, match=r"c/train does not exist. Expected layout"):
        SegmentationFolder(tmp_path / "c", "train", info)


def test_shapes_dataset_is_written_in_camvid_layout(tmp_path):
    root = write_shapes_dataset(tmp_path / "shapes", num_train=4, num_val=2)
    dataset = SegmentationFolder(root, "train", SEGMENTATION_DATASETS["shapes"])
    _, mask = dataset[0]
    assert len(dataset) == 4 and set(mask.unique().tolist()) <= {0, 1, 2, 3}


# ----------------------------------------------------------------------------------------------------------- tools
def _train(work_dir: Path, data_root: Path, *options: str, extra=()):
    return run_training_tool(train_seg, SHAPES_CFG, work_dir, *options, data_root=data_root, extra=extra)


@pytest.mark.integration
def test_train_seg_two_iterations_eval_and_resume(tmp_path):
    data = write_shapes_dataset(tmp_path / "shapes", num_train=16, num_val=4)
    options = ("schedule.epochs=2", "train.max_iters_per_epoch=2", "model.growth_rate=4")
    _train(tmp_path / "run", data, "schedule.epochs=1", *options[1:])
    assert load_checkpoint(tmp_path / "run" / "last.pth")["step"] == 2
    metrics = _train(tmp_path / "run", data, *options, extra=("--resume", "auto"))
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    assert state["epoch"] == 2 and state["step"] == 4
    assert {"mIoU", "global_acc", "IoU_disc"} <= set(metrics)


@pytest.mark.integration
def test_short_training_beats_chance_and_predict_tool(tmp_path):
    data = write_shapes_dataset(tmp_path / "shapes", num_train=48, num_val=8)
    metrics = _train(tmp_path / "run", data, "schedule.epochs=4")
    # Chance (everything background) gives mIoU ~ 31 here (background IoU ~ 0.94, shapes 0).
    assert metrics["mIoU"] > 70.0, metrics
    argv = [
        SHAPES_CFG,
        str(tmp_path / "run" / "best.pth"),
        "--data-root",
        str(data),
        "--split",
        "val",
        "--eval",
        "--out",
        str(tmp_path / "pred"),
        "--limit",
        "2",
    ]
    evaluated = predict_seg.main(predict_seg.get_args_parser().parse_args(argv))
    from densebackbones.engine import read_csv

    best = max(row["mIoU"] for row in read_csv(tmp_path / "run" / "eval.csv"))
    assert evaluated["mIoU"] == pytest.approx(best, abs=1e-3)  # predict_seg reproduces the trainer's evaluation
    pngs = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert pngs == ["shape_0000_overlay.png", "shape_0000_pred.png", "shape_0001_overlay.png", "shape_0001_pred.png"]
    pred = np.asarray(Image.open(tmp_path / "pred" / "shape_0000_pred.png"))
    assert pred.shape == (64, 80, 3)


def test_pretrained_segmentation_checkpoint_with_other_classes(tmp_path, caplog):
    source = db.create_model("fc_densenet56", num_classes=7, growth_rate=4, layers_per_block=1)
    torch.save({"model": source.state_dict()}, tmp_path / "seg.pth")
    from densebackbones.tasks.segmentation import SegmentationTask

    cfg = {"model": dict(type="fc_densenet56", growth_rate=4, layers_per_block=1), "data": dict(dataset="shapes")}
    with caplog.at_level("WARNING"):
        model = SegmentationTask().build_model(cfg, pretrained=str(tmp_path / "seg.pth"))
    assert model.decoder.classifier.out_channels == 3 and "classifier has 7 classes" in caplog.text
    torch.testing.assert_close(model.encoder.first_conv.weight, source.encoder.first_conv.weight)


def test_every_segmentation_config_is_valid():
    from densebackbones.engine.config import check_config, load_config
    from densebackbones.tasks.segmentation import SEG_DATA, SegmentationTask

    configs = sorted((REPO / "configs" / "seg").glob("*.py"))
    assert len(configs) == 11  # ten recipes and finetune_folder.py
    for path in configs:
        raw = load_config(path).to_dict()
        check_config(raw, SegmentationTask().model_arg_names(raw), SEG_DATA)


def test_class_weights_must_match_classes():
    from densebackbones.tasks.segmentation import SegmentationTask

    with pytest.raises(ValueError, match="class_weights has 2 entries for 3 classes"):
        SegmentationTask().loss_fn({"data": dict(dataset="shapes", class_weights=[1.0, 2.0])})


@pytest.mark.integration
def test_exported_weights_are_the_ema_weights_when_ema_is_on(tmp_path):
    from safetensors.torch import load_file

    data = write_shapes_dataset(tmp_path / "shapes", num_train=24, num_val=4)
    # timm's EMA copies the model at the first step and averages from the second on: three steps.
    _train(tmp_path / "run", data, "schedule.epochs=1", "train.max_iters_per_epoch=3", "train.ema_decay=0.5")
    state = load_checkpoint(tmp_path / "run" / "last.pth")
    exported = load_file(tmp_path / "run" / "final.safetensors")
    assert any(not torch.equal(state["model_ema"][k], v) for k, v in state["model"].items())
    for name, value in exported.items():
        torch.testing.assert_close(value, state["model_ema"][name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("name", ["fc_densenet56", "fc_densenet_bc121_k32"])
def test_memory_mode_argument_and_switch_like_the_backbones(name):
    # FC-DenseNet took only memory_efficient (a new user's trial): memory_mode and set_memory_mode as the backbones
    # have them, every dense block of encoder and decoder following, same outputs in every mode
    from helpers import tiny_kwargs

    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    outputs = {}
    for mode in ("plain", "buffer", "efficient"):
        torch.manual_seed(0)
        model = db.create_model(name, memory_mode=mode, **tiny_kwargs(name)).double().eval()
        blocks = [m for m in model.modules() if isinstance(m, db.layers.DenseBlock)]
        assert model.memory_mode == mode and blocks and {b.memory_mode for b in blocks} == {mode}
        with torch.no_grad():
            outputs[mode] = model(x)
    torch.testing.assert_close(outputs["buffer"], outputs["plain"])
    torch.testing.assert_close(outputs["efficient"], outputs["plain"])
    model.set_memory_mode("plain")
    assert model.memory_mode == "plain"
    with pytest.raises(ValueError, match="memory_efficient=True contradicts memory_mode='plain'"):
        db.create_model(name, memory_efficient=True, memory_mode="plain", **tiny_kwargs(name))

"""Fine-tuning on one's own data (README "Fine-tune on your own data", docs/finetune.md): class folders, multi-label
CSVs, image/mask folders and COCO json, from torchvision-format ImageNet weights; class names travel with the run
and the predictors print them; bad layouts are one-line errors naming the file."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from helpers import run_training_tool
from helpers.finetune_fixtures import (
    FOLDER_CLASSES,
    SEG_CLASSES,
    write_class_folders,
    write_coco_folder,
    write_mask_folders,
    write_multilabel_csv,
)
from PIL import Image
from safetensors import safe_open

from densebackbones.data.own import stratified_holdout
from densebackbones.engine import load_checkpoint
from densebackbones.tasks.metrics import UNDEFINED, MultiLabelMetric

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import predict_cls  # noqa: E402
import predict_seg  # noqa: E402
import train_cls  # noqa: E402
import train_det  # noqa: E402
import train_seg  # noqa: E402

FOLDER_CFG = str(REPO / "configs/cls/finetune_folder.py")
MULTILABEL_CFG = str(REPO / "configs/cls/finetune_multilabel_csv.py")
SEG_CFG = str(REPO / "configs/seg/finetune_folder.py")
DET_CFG = str(REPO / "configs/det/finetune_coco.py")
SHORT = ["schedule.epochs=1", "schedule.type=constant", "train.max_iters_per_epoch=1", "data.num_workers=0"]
TINY_CLS = [
    "model.pretrained=False",
    "model.growth_rate=4",
    "model.block_config=(1,1,1,1)",
    "data.image_size=32",
    "data.batch_size=4",
]


def tiny_torchvision_weights(path: Path) -> Path:
    """A torchvision-format DenseNet state dict (k=4, one layer per block) standing in for densenet121's."""
    torch.save(
        torchvision.models.DenseNet(growth_rate=4, block_config=(1, 1, 1, 1), num_init_features=8).state_dict(), path
    )
    return path


def safetensors_cfg(path: Path) -> dict:
    with safe_open(str(path), "pt") as handle:
        return json.loads(handle.metadata()["pretrained_cfg"])


# ------------------------------------------------------------------------------------------------ class folders
@pytest.mark.integration  # trains or runs a tool
def test_folder_from_torchvision_densenet121_state_dict(tmp_path):
    """The documented command with torchvision's DenseNet-121 file format: its weights load, the head is new."""
    root = write_class_folders(tmp_path / "pets")
    weights = tmp_path / "densenet121.pth"
    torch.save(torchvision.models.densenet121(weights=None).state_dict(), weights)  # torchvision's format
    run = tmp_path / "run"
    options = ["data.image_size=32", "data.batch_size=4", "optimizer.lr=0.0", "train.plot=False"]
    run_training_tool(
        train_cls, FOLDER_CFG, run, *SHORT, *options, data_root=root, extra=("--pretrained", str(weights))
    )
    model = load_checkpoint(run / "last.pth")["model"]
    assert model["classifier.weight"].shape == (3, 1024)
    source = torch.load(weights, weights_only=True)
    torch.testing.assert_close(model["features.conv0.weight"], source["features.conv0.weight"])  # lr 0: as loaded


@pytest.mark.integration  # trains or runs a tool
def test_folder_finetune_names_travel_and_predict_cls_prints_them(tmp_path, capsys):
    root = write_class_folders(tmp_path / "pets")  # grey PNGs among the JPEGs; 'owl' has one training image
    weights = tiny_torchvision_weights(tmp_path / "tiny.pth")
    run = tmp_path / "run"
    metrics = run_training_tool(
        train_cls, FOLDER_CFG, run, *SHORT, *TINY_CLS, data_root=root, extra=("--pretrained", str(weights))
    )
    assert set(metrics) == {"top1", "loss"}  # three classes: no top-5
    state = load_checkpoint(run / "last.pth")
    classes = sorted(FOLDER_CLASSES)
    assert state["config"]["data"]["classes"] == classes and state["meta"]["classes"] == classes
    meta = json.loads((run / "meta.json").read_text())
    assert meta["classes"] == classes and meta["device"]  # the CPU named too (platform.processor() may be empty)
    assert "curves:" not in capsys.readouterr().out  # run_training_tool turns plotting off: no curves file
    assert safetensors_cfg(run / "final.safetensors")["label_names"] == classes

    capsys.readouterr()
    args = [str(run / "best.pth"), str(root / "val"), "--topk", "5", "--out", str(tmp_path / "pred.csv")]
    rows = predict_cls.main(predict_cls.get_args_parser().parse_args(args))
    assert len(rows) == 3 and list(rows[0]) == [
        "image",
        "label_1",
        "score_1",
        "label_2",
        "score_2",
        "label_3",
        "score_3",
    ]
    assert all({r["label_1"], r["label_2"], r["label_3"]} == set(classes) for r in rows)
    text = (tmp_path / "pred.csv").read_text().splitlines()
    assert text[0] == "image,label_1,score_1,label_2,score_2,label_3,score_3" and len(text) == 4
    # the exported safetensors predict the same, reading config.py beside them
    again = predict_cls.main(predict_cls.get_args_parser().parse_args([str(run / "final.safetensors"), *args[1:4]]))
    assert [r["label_1"] for r in again] == [r["label_1"] for r in rows]
    # the other predictors' form, CONFIG CHECKPOINT INPUT..., gives the same
    config_first = [str(run / "config.py"), str(run / "best.pth"), str(root / "val")]
    assert predict_cls.main(predict_cls.get_args_parser().parse_args(config_first)) == rows


@pytest.mark.integration  # trains or runs a tool
def test_folder_without_val_holds_out_a_stratified_fraction(tmp_path, capsys):
    root = write_class_folders(tmp_path / "pets", val=False)
    weights = tiny_torchvision_weights(tmp_path / "tiny.pth")
    run_training_tool(
        train_cls, FOLDER_CFG, tmp_path / "run", *SHORT, *TINY_CLS, data_root=root, extra=("--pretrained", str(weights))
    )
    out = capsys.readouterr().out
    assert "evaluating on 2 of the 9 training images" in out and "data.val_fraction=0.1" in out
    labels = [0] * 10 + [1] * 4 + [2]
    train, held = stratified_holdout(labels, 0.2)
    assert sorted(train + held) == list(range(15)) and 14 in train  # the single-image class stays in training
    assert [labels[i] for i in held] == [0, 0, 1]  # ceil(0.2 * 10), ceil(0.2 * 4), none of one image


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("model.num_classes=5", "model.num_classes=5 contradicts the 3 classes"),
        ("data.classes=['cat','dog']", "data.classes=['cat', 'dog'] contradicts the class folders"),
    ],
)
def test_folder_contradicting_class_settings_are_errors(tmp_path, option, message):
    root = write_class_folders(tmp_path / "pets")
    with pytest.raises(ValueError, match=re.escape(message)):
        run_training_tool(train_cls, FOLDER_CFG, tmp_path / "run", *SHORT, *TINY_CLS, option, data_root=root)


def test_imagenet_recipe_on_an_own_tree_is_an_error_not_a_1000_way_classifier(tmp_path):
    root = write_class_folders(tmp_path / "pets")
    config = str(REPO / "configs/cls/densenet_bc121_k32_imagenet.py")
    with pytest.raises(ValueError, match="has 3 class folders .* configs/cls/finetune_folder.py"):
        run_training_tool(train_cls, config, tmp_path / "run", *SHORT, *TINY_CLS, data_root=root)


# ------------------------------------------------------------------------------------------- multi-label CSVs
@pytest.mark.integration  # trains or runs a tool
def test_multilabel_csv_finetune_auroc_map_and_probabilities(tmp_path, caplog):
    root = write_multilabel_csv(tmp_path / "xray")  # grey images, ChestX-ray14's columns
    weights = tiny_torchvision_weights(tmp_path / "tiny.pth")
    run = tmp_path / "run"
    metrics = run_training_tool(
        train_cls,
        MULTILABEL_CFG,
        run,
        *SHORT,
        *TINY_CLS,
        "data.pos_weight='balanced'",
        data_root=root,
        extra=("--pretrained", str(weights)),
    )
    classes = ["Atelectasis", "Effusion", "Mass", "No Finding"]
    assert "without positives in the evaluation split, left out of auroc and mAP: Mass" in caplog.text
    assert metrics["auroc_Mass"] == metrics["AP_Mass"] == UNDEFINED  # never NaN
    defined = [metrics[f"auroc_{c}"] for c in classes if c != "Mass"]
    assert metrics["auroc"] == pytest.approx(sum(defined) / 3)
    assert metrics["mAP"] == pytest.approx(sum(metrics[f"AP_{c}"] for c in classes if c != "Mass") / 3)
    header = (run / "eval.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["epoch", "step", "auroc", "mAP", "loss"] and "auroc_No Finding" in header
    state = load_checkpoint(run / "last.pth")
    assert state["config"]["data"]["classes"] == classes and state["meta"]["multi_label"] is True
    assert state["best_metric"] == pytest.approx(metrics["auroc"])  # auroc selects best.pth
    assert safetensors_cfg(run / "final.safetensors")["label_names"] == classes

    args = [str(run / "best.pth"), str(root / "images" / "00000001_000.png"), str(root / "images")]
    rows = predict_cls.main(predict_cls.get_args_parser().parse_args(args))
    assert len(rows) == 13 and list(rows[0]) == ["image", *classes]
    assert all(0.0 <= float(rows[0][c]) <= 1.0 for c in classes)


def test_multilabel_label_only_val_has_is_an_error(tmp_path):
    root = write_multilabel_csv(tmp_path / "xray", val=[("00000009_000.png", "Effusion|Hernia")])
    with pytest.raises(ValueError, match=r"val.csv line 2 \(00000009_000.png\): label 'Hernia' is not in the train"):
        run_training_tool(train_cls, MULTILABEL_CFG, tmp_path / "run", *SHORT, *TINY_CLS, data_root=root)


def _no_train_folder(root: Path) -> tuple[str, str]:
    write_class_folders(root)
    (root / "train").rename(root / "training")
    return FOLDER_CFG, "pets/train does not exist. Expected layout: .*pets/train/<class name>/<image>"


def _csv_without_label_column(root: Path) -> tuple[str, str]:
    write_multilabel_csv(root)
    text = (root / "train.csv").read_text().replace("Finding Labels", "Findings")
    (root / "train.csv").write_text(text)
    return MULTILABEL_CFG, r"train.csv has no column\(s\) \['Finding Labels'\]; its columns are"


def _csv_image_missing(root: Path) -> tuple[str, str]:
    write_multilabel_csv(root)
    (root / "images" / "00000010_000.png").unlink()
    return MULTILABEL_CFG, r"1 image\(s\) listed in .*val.csv do not exist, e.g. .*images/00000010_000.png"


@pytest.mark.parametrize("layout", [_no_train_folder, _csv_without_label_column, _csv_image_missing])
def test_classification_layout_errors_name_the_file(tmp_path, layout):
    config, message = layout(tmp_path / "pets")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run_training_tool(train_cls, config, tmp_path / "run", *SHORT, *TINY_CLS, data_root=tmp_path / "pets")


def test_multilabel_metric_is_scikit_learns():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, (40, 3)).astype(np.float32)
    targets[:, 2] = 0  # no positives
    logits = rng.normal(size=(40, 3)).astype(np.float32) + targets
    metric = MultiLabelMetric(["a", "b", "c"])
    for part in np.array_split(np.arange(40), 3):
        metric.update(torch.from_numpy(logits[part]), torch.from_numpy(targets[part]))
    out = metric.compute()
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = [roc_auc_score(targets[:, i], probs[:, i]) for i in range(2)]
    assert out["auroc_a"] == pytest.approx(expected[0]) and out["auroc"] == pytest.approx(np.mean(expected))
    assert out["mAP"] == pytest.approx(np.mean([average_precision_score(targets[:, i], probs[:, i]) for i in range(2)]))
    assert out["auroc_c"] == out["AP_c"] == UNDEFINED


# ------------------------------------------------------------------------------------------- image/mask folders
TINY_SEG = [
    "model.encoder_kwargs.pretrained=False",  # error cases stop before any weights are needed: never download
    "model.encoder_kwargs.growth_rate=4",
    "model.encoder_kwargs.block_config=(1,1,1,1)",
    "model.growth_rate=4",
    "model.layers_per_block=1",
    "data.crop_size=32",
    "data.batch_size=2",
]


@pytest.mark.integration  # trains or runs a tool
def test_segmentation_folder_encoder_from_classification_weights(tmp_path):
    root = write_mask_folders(tmp_path / "streets")  # grey PNG and RGB JPEG images, 255 in every mask
    weights = tiny_torchvision_weights(tmp_path / "tiny.pth")
    run = tmp_path / "run"
    metrics = run_training_tool(
        train_seg,
        SEG_CFG,
        run,
        *SHORT,
        *TINY_SEG,
        "optimizer.lr=0.0",
        data_root=root,
        extra=("--pretrained", str(weights)),
    )
    assert {f"IoU_{c}" for c in SEG_CLASSES} <= set(metrics) and 0 <= metrics["mIoU"] <= 100
    state = load_checkpoint(run / "last.pth")
    source = torch.load(weights, weights_only=True)
    torch.testing.assert_close(state["model"]["encoder.model.features.conv0.weight"], source["features.conv0.weight"])
    assert state["config"]["data"]["classes"] == SEG_CLASSES and state["meta"]["classes"] == SEG_CLASSES
    assert json.loads((run / "meta.json").read_text())["classes"] == SEG_CLASSES
    assert safetensors_cfg(run / "final.safetensors")["label_names"] == SEG_CLASSES

    out = tmp_path / "pred"
    argv = [str(run / "config.py"), str(run / "best.pth"), "--split", "val", "--eval", "--out", str(out)]
    predicted = predict_seg.main(predict_seg.get_args_parser().parse_args(argv))
    assert predicted["mIoU"] == pytest.approx(metrics["mIoU"])
    overlay = np.asarray(Image.open(out / "frame_0_overlay.png"))
    assert overlay.shape == (40, 48, 3) and (out / "frame_1_pred.png").exists()


def _drop_mask(root: Path) -> str:
    (root / "train/masks/frame_1.png").unlink()
    return "image .*train/images/frame_1.png has no mask .*train/masks/frame_1.png"


def _resize_mask(root: Path) -> str:
    Image.new("L", (20, 20)).save(root / "train/masks/frame_2.png")
    return "mask .*train/masks/frame_2.png is 20x20 but its image .*frame_2.jpg is 48x40"


def _bad_index(root: Path) -> str:
    mask = np.zeros((40, 48), dtype=np.uint8)
    mask[5, 5] = 7
    for split, count in (("train", 4), ("val", 2)):  # every mask: the first one read fails whatever the order
        for i in range(count):
            Image.fromarray(mask).save(root / split / "masks" / f"frame_{i}.png")
    return r"masks/frame_\d.png has label values \[7\] outside 0..2"


@pytest.mark.parametrize("damage", [_drop_mask, _resize_mask, _bad_index])
def test_segmentation_folder_layout_errors_name_the_file(tmp_path, damage):
    root = write_mask_folders(tmp_path / "streets")
    message = damage(root)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run_training_tool(train_seg, SEG_CFG, tmp_path / "run", *SHORT, *TINY_SEG, data_root=root)


@pytest.mark.integration  # trains or runs a tool
def test_segmentation_layout_error_is_one_line_from_the_tool(tmp_path):
    root = write_mask_folders(tmp_path / "streets")
    _drop_mask(root)
    command = [sys.executable, str(REPO / "tools/train_seg.py"), SEG_CFG, "--data-root", str(root), "--cfg-options"]
    command += ["model.encoder_kwargs.pretrained=False", "model.encoder_kwargs.growth_rate=4"]
    result = subprocess.run([*command, "--work-dir", str(tmp_path / "run")], capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: image ") and "frame_1.png" in result.stderr


# ---------------------------------------------------------------------------------------------------- COCO json
@pytest.mark.integration  # trains or runs a tool
def test_detection_on_own_coco_json_names_from_the_json(tmp_path):
    root = write_coco_folder(tmp_path / "parts")
    weights = tiny_torchvision_weights(tmp_path / "tiny.pth")
    run = tmp_path / "run"
    options = [
        "model.backbone_kwargs.pretrained=False",
        "model.backbone_kwargs.growth_rate=4",
        "model.backbone_kwargs.block_config=(1,1,1,1)",
        "model.head_kwargs.second_half=8",
        "model.head_kwargs.extra_halves=(8,8,8,8)",
        "data.image_size=128",
        "data.batch_size=2",
        "data.eval_batch_size=3",
        "optimizer.lr=0.0",
    ]
    metrics = run_training_tool(
        train_det, DET_CFG, run, *SHORT, *options, data_root=root, extra=("--pretrained", str(weights))
    )
    assert "AP50" in metrics
    state = load_checkpoint(run / "last.pth")
    assert state["config"]["data"]["classes"] == ["bolt", "nut"] and state["meta"]["classes"] == ["bolt", "nut"]
    backbone = [k for k in state["model"] if k.endswith("features.conv0.weight")]
    assert len(backbone) == 1
    torch.testing.assert_close(
        state["model"][backbone[0]], torch.load(weights, weights_only=True)["features.conv0.weight"]
    )
    assert safetensors_cfg(run / "final.safetensors")["label_names"] == ["bolt", "nut"]


# ------------------------------------------------------------------------------------------------------- README
def _readme_commands() -> list[list[str]]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Fine-tune on your own data", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split("#", 1)[0])
            if words[:2] and words[0] == "python" and words[1].startswith("tools/train_"):
                commands.append(words[1:])
    return commands


def test_readme_commands_resolve_on_the_documented_layouts(tmp_path, capsys):
    """Every documented training command, with DIR holding its layout, resolves its config (--print-config)."""
    commands = _readme_commands()
    assert {c[1] for c in commands} == {
        "configs/cls/finetune_folder.py",
        "configs/cls/finetune_multilabel_csv.py",
        "configs/seg/finetune_folder.py",
        "configs/det/finetune_coco.py",
    }
    tools = {"tools/train_cls.py": train_cls, "tools/train_seg.py": train_seg, "tools/train_det.py": train_det}
    for tool, config, *rest in commands:
        assert (REPO / config).is_file() and "DIR" in rest
        argv = [str(REPO / config), *[str(tmp_path / a) if a.endswith(".pth") else a for a in rest], "--print-config"]
        argv = [str(tmp_path / "data") if a == "DIR" else a for a in argv]
        tools[tool].main(tools[tool].get_args_parser().parse_args(argv))
        assert "data = dict(" in capsys.readouterr().out

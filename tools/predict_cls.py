"""Classify images with a trained run: the top-k class names and scores per image, or for a multi-label run every
label's probability, as CSV.

python tools/predict_cls.py work_dirs/finetune_folder/best.pth photo.jpg more_photos/ --topk 3 --out predictions.csv
python tools/predict_cls.py work_dirs/finetune_multilabel_csv/final.safetensors scans/
python tools/predict_cls.py CONFIG CHECKPOINT INPUT...      (the other predictors' form: the config first)

CHECKPOINT is a trainer checkpoint (last.pth/best.pth: it holds the run's config with its class names) or an
exported ``final.safetensors`` (its run's ``config.py`` is read from the same folder, or from ``--config``). Inputs are
image files and folders (searched recursively). Runs on data sets without class names (CIFAR...) name the classes by
index.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from densebackbones.data import DATASETS, build_eval_transform
from densebackbones.engine import cli, init_distributed
from densebackbones.engine.checkpoint import load_checkpoint
from densebackbones.engine.config import load_config, merge_defaults
from densebackbones.models.helpers import trained_head_required
from densebackbones.tasks.classification import CLS_DATA, ClassificationTask, image_size, normalization


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Classify images with a trained run (CSV of class names and scores)")
    parser.add_argument(
        "checkpoint", help="last.pth/best.pth of a run, or its final.safetensors (or CONFIG CHECKPOINT)"
    )
    parser.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    parser.add_argument("--config", help="the run's config (default: the checkpoint's own, or config.py beside it)")
    parser.add_argument(
        "--topk", "--top-k", type=int, default=5, help="single-label runs: classes per image (default 5)"
    )
    parser.add_argument("--out", "--output", help="write the CSV here (default: standard output)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--debug", action="store_true", help="full tracebacks on errors")
    return parser


def run_config(checkpoint: Path, config: str | None) -> dict:
    """The resolved config of the run that wrote ``checkpoint``."""
    if config is None and checkpoint.suffix != ".safetensors":
        state = load_checkpoint(checkpoint)
        if isinstance(state, dict) and isinstance(state.get("config"), dict):
            return merge_defaults(state["config"], CLS_DATA)
    path = Path(config) if config else checkpoint.parent / "config.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"{checkpoint} does not hold its run's config and {path} does not exist; pass the run's config.py with "
            f"--config"
        )
    return merge_defaults(load_config(path).to_dict(), CLS_DATA)


def collect_images(inputs: list[str]) -> list[Path]:
    images = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS))
            if not found:
                raise FileNotFoundError(f"{path} holds no images")
            images.extend(found)
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return images


def class_names(cfg: dict) -> list[str]:
    classes = cfg["data"].get("classes")
    if classes:
        return list(classes)
    return [str(i) for i in range(DATASETS[cfg["data"]["dataset"]].num_classes)]


@torch.no_grad()
def predict(args: argparse.Namespace) -> list[dict]:
    if args.checkpoint.endswith(".py") and args.config is None:  # CONFIG CHECKPOINT INPUT..., as predict_seg/det
        if len(args.inputs) < 2:
            raise ValueError("after CONFIG and CHECKPOINT name at least one image or folder")
        args.config, args.checkpoint, args.inputs = args.checkpoint, args.inputs[0], args.inputs[1:]
    checkpoint = Path(args.checkpoint)
    cfg = run_config(checkpoint, args.config)
    names = class_names(cfg)
    cfg["data"]["root"] = None  # the run's data need not be here: its classes are in the config
    multi_label = cfg["data"]["dataset"] == "multilabel_csv"
    device = init_distributed(args.device).device
    with trained_head_required():  # numbers from the checkpoint's own classifier only
        model = ClassificationTask().build_model(cfg, pretrained=str(checkpoint)).to(device).eval()
    info = DATASETS.get(cfg["data"]["dataset"])
    mode = "L" if info is not None and info.in_chans == 1 else "RGB"
    transform = build_eval_transform(
        cfg["data"]["augment"], image_size(cfg), *normalization(cfg), native_size=info.image_size if info else None
    )
    images = collect_images(args.inputs)
    rows = []
    for start in range(0, len(images), args.batch_size):
        batch = images[start : start + args.batch_size]
        tensors = []
        for path in batch:
            try:
                with Image.open(path) as image:
                    tensors.append(transform(image.convert(mode)))
            except OSError as err:
                raise OSError(f"cannot read image {path}: {err}") from err
        logits = model(torch.stack(tensors).to(device))
        logits = logits[-1] if isinstance(logits, (list, tuple)) else logits  # multi-exit models: the final exit
        if multi_label:
            for path, probs in zip(batch, torch.sigmoid(logits.float()).cpu()):
                rows.append({"image": str(path), **{n: f"{p:.6f}" for n, p in zip(names, probs.tolist())}})
            continue
        scores, indices = torch.softmax(logits.float(), 1).topk(min(args.topk, len(names)), dim=1)
        for path, top_scores, top_indices in zip(batch, scores.cpu().tolist(), indices.cpu().tolist()):
            row = {"image": str(path)}
            for rank, (score, index) in enumerate(zip(top_scores, top_indices), start=1):
                row[f"label_{rank}"], row[f"score_{rank}"] = names[index], f"{score:.6f}"
            rows.append(row)
    return rows


def main(args: argparse.Namespace) -> list[dict]:
    rows = predict(args)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text.getvalue())
        print(f"wrote predictions for {len(rows)} images to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text.getvalue())
    return rows


if __name__ == "__main__":
    cli.run_main(main, get_args_parser())

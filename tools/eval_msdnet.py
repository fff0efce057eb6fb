"""Anytime and budgeted evaluation of a multi-exit classifier (MSDNet, Huang et al., ICLR 2018, Sec. 5).

python tools/eval_msdnet.py CONFIG CHECKPOINT [--holdout N] [--budgets M ...] [--compare CONFIG=CHECKPOINT ...]

* Anytime: every exit's top-1 on the evaluation split against the cumulative multiply-adds of reaching it.
* Budgeted: exit thresholds fitted on the held-out training images (``data.holdout``: N of the training
  split; train with the same setting so that they were not trained on) for the paper's 39 geometric exit
  distributions, applied to the evaluation split: accuracy against average multiply-adds per image. ``--budgets``
  picks, for each average budget, the setting with the best held-out accuracy within it.
* ``--compare`` adds other models' points (e.g. DenseNets trained on the same data) to the plot.

Writes ``<out>/early_exit.json`` and ``<out>/accuracy_vs_macs.png`` (default out: the checkpoint's folder).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)
from torch.utils.data import DataLoader

from densebackbones.engine import DistInfo, cli, evaluate_record
from densebackbones.engine.cli import resolve_config
from densebackbones.flops import count_macs
from densebackbones.models import MSDNet
from densebackbones.models.helpers import trained_head_required
from densebackbones.registry import model_class
from densebackbones.tasks.classification import ClassificationTask, image_size
from densebackbones.tasks.early_exit import collect_exit_probs, dynamic_sweep, select_budget


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Anytime and budgeted evaluation of a multi-exit classifier")
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--data-root")
    parser.add_argument("--holdout", type=int, help="held-out training images for the thresholds (data.holdout)")
    parser.add_argument("--budgets", type=float, nargs="+", metavar="MACS", help="average multiply-adds per image")
    parser.add_argument("--compare", nargs="+", default=[], metavar="CONFIG=CHECKPOINT", help="other models' points")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", help="folder for early_exit.json and accuracy_vs_macs.png")
    parser.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE")
    return parser


def _compare_point(spec: str, task: ClassificationTask, data_root: str | None, batch: int) -> dict[str, object]:
    config, sep, checkpoint = spec.partition("=")
    if not sep or not checkpoint:
        raise ValueError(f"--compare {spec!r}: give CONFIG=CHECKPOINT")
    cfg = resolve_config(argparse.Namespace(config=config, cfg_options=None, data_root=data_root), task)
    with trained_head_required():  # numbers from the checkpoint's own classifier only
        record = task.build(cfg, pretrained=checkpoint, training=False)
    model = record.model.eval()
    metrics = evaluate_record(record, cfg, DistInfo(), batch_size=batch, show_progress=False)
    size = image_size(cfg)
    macs = count_macs(model, (1, model.in_chans, size, size))
    return dict(name=cfg["model"]["type"], checkpoint=checkpoint, accuracy=metrics["top1"], macs=macs)


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    anytime = report["anytime"]
    ax.plot([p["macs"] / 1e6 for p in anytime], [p["accuracy"] for p in anytime], "o-", label="anytime (per exit)")
    budgeted = sorted(report["budgeted"], key=lambda p: p["cost"])
    ax.plot([p["cost"] / 1e6 for p in budgeted], [p["accuracy"] for p in budgeted], ".-", label="budgeted (dynamic)")
    for point in report["compare"]:
        ax.plot(point["macs"] / 1e6, point["accuracy"], "s", label=point["name"])
    ax.set_xlabel("multiply-adds per image (M)"), ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(report["model"]), ax.legend(), ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(args: argparse.Namespace) -> dict[str, object]:
    task = ClassificationTask()
    cfg = resolve_config(args, task)
    if args.holdout is not None:
        cfg["data"]["holdout"] = args.holdout
    if not cfg["data"]["holdout"]:
        raise ValueError(
            "the held-out split is empty: budgeted evaluation fits its thresholds on held-out training images; "
            "pass --holdout N (and train with data.holdout=N so that they stay unseen; the paper holds out 5000 CIFAR "
            "images)"
        )
    built_class = model_class(cfg["model"]["type"])
    if built_class is not None and issubclass(built_class, MSDNet):
        cfg["model"]["output"] = "all"  # every exit (a registered MSDNet is final-only unless told otherwise)
    with trained_head_required():  # numbers from the checkpoint's own classifier only
        model = task.build_model(cfg, pretrained=args.checkpoint).eval()
    if not hasattr(model, "exit_costs"):
        raise ValueError(
            f"model.type={cfg['model']['type']!r} has a single exit; this tool evaluates multi-exit models"
        )
    holdout_set, eval_set = task.build_datasets(cfg, holdout_split=True)
    costs = [c["macs"] for c in model.exit_costs(image_size(cfg))]
    val_probs, val_targets = collect_exit_probs(model, DataLoader(holdout_set, batch_size=args.batch_size))
    test_probs, test_targets = collect_exit_probs(model, DataLoader(eval_set, batch_size=args.batch_size))
    anytime = [
        dict(
            exit=k + 1, macs=costs[k], accuracy=100.0 * float((test_probs[k].argmax(1) == test_targets).double().mean())
        )
        for k in range(len(costs))
    ]
    sweep = dynamic_sweep(val_probs, val_targets, test_probs, test_targets, costs)
    report: dict[str, object] = dict(
        model=cfg["model"]["type"],
        checkpoint=args.checkpoint,
        holdout=len(holdout_set),
        test=len(eval_set),
        exit_macs=costs,
        anytime=anytime,
        budgeted=sweep,
        budgets=[dict(budget=b, **select_budget(sweep, b, costs)) for b in args.budgets or []],
        compare=[_compare_point(spec, task, args.data_root, args.batch_size) for spec in args.compare],
    )
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "early_exit.json").write_text(json.dumps(report, indent=2))
    report["plot"] = str(plot(report, out / "accuracy_vs_macs.png"))
    summary = {k: report[k] for k in ("model", "holdout", "test", "anytime", "budgets", "compare", "plot")}
    print(json.dumps(summary, indent=2))
    return report


if __name__ == "__main__":
    cli.run_main(main, get_args_parser())

"""The model tables of docs/models/*.md, generated from the registry: one source of truth for names, layouts,
parameter counts, input sizes and weights.

python tools/model_tables.py            # print every table
python tools/model_tables.py --write    # rewrite the tables in docs/models/*.md between their marker comments
python tools/model_tables.py --check    # exit status 1 if a committed table differs (tests/docs/test_docs.py)

A table sits between ``<!-- model-table:ID start -->`` and ``<!-- model-table:ID end -->`` in ``docs/models/PAGE.md``.
Layouts come from each family's ``MODEL_ARCHS``, parameters are counted on the meta device (nothing allocated), input
sizes and weight tags come from each model's ``pretrained_cfg``. What the registry cannot know -- which paper model a
name is -- is written here, and a registered model missing from every table is an error, so a new model cannot be
left out. The counts are checked against the papers' by tests/models/test_params.py (docs/reference.md).
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)
import torch

import densebackbones as db
from densebackbones.models import condensenet, densenet, dsod, msdnet, peleenet, published

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "models"

# What each classification model is in its paper (the registry knows the layout, not the paper's name for it).
PAPER_MODELS = {
    "densenet_bc121_k32": "DenseNet-121",
    "densenet_bc169_k32": "DenseNet-169",
    "densenet_bc201_k32": "DenseNet-201",
    "densenet_bc161_k48": "DenseNet-161",
    "densenet_bc264_k32": "DenseNet-264",
    "densenet_bc232_k48": "DenseNet-232",
    "densenet_bc264_k48": "DenseNet-264 (k=48)",
    "densenet40_k12_cifar": "DenseNet L=40",
    "densenet100_k12_cifar": "DenseNet L=100",
    "densenet100_k24_cifar": "DenseNet L=100",
    "densenet_bc100_k12_cifar": "DenseNet-BC L=100",
    "densenet_bc250_k24_cifar": "DenseNet-BC L=250",
    "densenet_bc190_k40_cifar": "DenseNet-BC L=190",
    "wide_densenet_bc40_k36_cifar": "Wide-DenseNet-BC L=40",
    "wide_densenet_bc40_k48_cifar": "Wide-DenseNet-BC L=40",
    "wide_densenet_bc40_k60_cifar": "Wide-DenseNet-BC L=40",
    "dsod_ds64_192_48_1": "DSOD's backbone DS/64-192-48-1",
    "dsod_ds64_256_64_1": "DSOD300-lite's backbone DS/64-256-64-1 (layout reconstructed)",
    "peleenet": "PeleeNet (Wang et al. 2018, two-way dense layers)",
    "condensenet74_c4_g4": "CondenseNet-74, C=G=4 (Huang et al. 2018), while training",
    "condensenet74_c4_g4_converted": "the same, converted for deployment",
    "condensenet74_c8_g8": "CondenseNet-74, C=G=8, while training",
    "condensenet74_c8_g8_converted": "the same, converted",
    "condensenet86_cifar": "CondenseNet-86, C=G=4, while training",
    "condensenet86_cifar_converted": "the same, converted",
    "condensenet182_cifar": "CondenseNet-182, C=G=4, while training",
    "condensenet182_cifar_converted": "the same, converted",
    "msdnet_anytime_cifar": "MSDNet, CIFAR-100 anytime (Huang et al. 2018), 7 exits",
    "msdnet_budgeted_cifar": "MSDNet, CIFAR-100 budgeted batch, 5 exits",
    "msdnet_imagenet": "MSDNet, ImageNet, 5 exits",
}


@dataclass(frozen=True)
class Row:
    """A table row beyond the classification ones: a model (with arguments) and the text columns."""

    name: str
    what: str
    paper: str = ""
    kwargs: dict = field(default_factory=dict)


SEGMENTATION_ROWS = [
    Row("fc_densenet56", "FC-DenseNet56 (4 layers per block, k=12)"),
    Row("fc_densenet67", "FC-DenseNet67 (5 layers per block, k=16)"),
    Row("fc_densenet103", "FC-DenseNet103 (4-5-7-10-12-15-12-10-7-5-4, k=16)"),
    Row("fc_densenet_bc121_k32", "FC-DenseNet103's up path on DenseNet-121 features"),
    Row("fc_densenet_bc169_k32", "FC-DenseNet103's up path on DenseNet-169 features"),
]
DENSE_ASPP_ROWS = [
    Row("dense_aspp121", "DenseASPP on DenseNet-121 (branch widths 128, 64), 19 classes"),
    Row("dense_aspp161", "DenseASPP on DenseNet-161 (512, 128)"),
    Row("dense_aspp169", "DenseASPP on DenseNet-169 (336, 168)"),
    Row("dense_aspp201", "DenseASPP on DenseNet-201 (480, 240)"),
]
DEEPLAB_ROWS = [Row("deeplabv3_densenet121", "DeepLabV3 (torchvision's head) on DenseNet-121 at output stride 8")]
DSOD_DETECTION_ROWS = [
    Row("dsod300", "DSOD300, VOC (21 classes)", "14.8M (docs/reference.md: 14.72M trainable)"),
    Row("dsod300_lite", "DSOD300-lite, VOC (its backbone's layers per block reconstructed)", "10.4M"),
    Row("dsod_bc121_k32", "DSOD's head on DenseNet-121"),
]
PELEE_DETECTION_ROWS = [
    Row("pelee", "Pelee, VOC (21 classes)", "5.43M; VOC07 test 70.9 mAP (07+12), 76.4 (07+12+COCO)"),
    Row("pelee", "Pelee, COCO", "5.98M; COCO test-dev 22.4 AP, 38.3 AP50", dict(num_classes=81)),
    Row("pelee_bc121_k32", "the Pelee head on DenseNet-121"),
]


def _arch(name: str) -> dict:
    for module in (densenet, dsod, peleenet, condensenet, msdnet):
        archs = module.MODEL_ARCHS
        if name in archs or name.removesuffix("_converted") in archs:
            return archs.get(name) or archs[name.removesuffix("_converted")]
    raise KeyError(f"{name}: no MODEL_ARCHS entry in any family")


def _dashes(values) -> str:
    return "-".join(str(v) for v in values) if isinstance(values, (tuple, list)) else str(values)


@functools.cache
def _built(name: str, kwargs: tuple = ()) -> tuple[int, int, dict]:
    """(parameters, trainable parameters, pretrained_cfg) of a model built once on the meta device."""
    with torch.device("meta"):
        model = db.create_model(name, **dict(kwargs))
    params = [(p.numel(), p.requires_grad) for p in model.parameters()]
    return sum(n for n, _ in params), sum(n for n, grad in params if grad), dict(model.pretrained_cfg)


def _params(name: str, trainable: bool = False, **kwargs) -> int:
    total, grad, _ = _built(name, tuple(sorted(kwargs.items())))
    return grad if trainable else total


def _weights(name: str) -> str:
    cfg = _built(name)[2]
    has_weights = cfg.get("url") or cfg.get("hf_hub_id") or cfg.get("file")
    return f"`{cfg['tag']}`" if has_weights and cfg.get("tag") else ""


def _official_tags(name: str) -> list[str]:
    """The tags of the name's weights: torchvision's and the official releases' (models/published.py)."""
    tags = list(published.TORCHVISION_WEIGHTS) + list(published.OFFICIAL)
    return [tag for tag in tags if tag.split(".")[0] == name]


def _tag_cell(tag: str) -> str:
    result = published.published_result(tag)
    what = published.describe(result) if result else f"no score ({published.OFFICIAL[tag].source})"
    return f"`{tag.split('.')[1]}`: {what}"


def _published(name: str) -> str:
    """The published result of the name and of each weight tag of it, with its source (models/published.py)."""
    result = published.published_result(name)
    cells = ([published.describe(result)] if result else []) + [_tag_cell(tag) for tag in _official_tags(name)]
    return "; ".join(cells) or "none: " + published.NOT_PUBLISHED[name]


def _task_tags(name: str) -> str:
    return "; ".join(_tag_cell(tag) for tag in _official_tags(name))


def classification_table(names: list[str]) -> str:
    lines = ["| name | paper model | k | layers per block | params | input | weights | published |", "|---" * 8 + "|"]
    for name in names:
        arch = _arch(name)
        if name.startswith("msdnet"):
            layout = msdnet.block_steps(arch["num_blocks"], arch["base"], arch["step"], arch["step_mode"])
        else:
            layout = arch["block_config"]
        size = _built(name)[2]["input_size"][-1]
        cells = [f"`{name}`", PAPER_MODELS[name], _dashes(arch["growth_rate"]), _dashes(layout)]
        counted = dict(output="all") if name.startswith("msdnet") else {}  # the paper's count: every exit built
        cells += [f"{_params(name, **counted):,}", str(size), _weights(name), _published(name)]
        lines.append(("| " + " | ".join(cells) + " |").replace("|  |", "| |"))
    return "\n".join(lines)


def segmentation_table(rows: list[Row]) -> str:
    lines = ["| name | model | trainable params | official weights (tags) |", "|---|---|---|---|"]
    for r in rows:
        count = _params(r.name, trainable=True, **r.kwargs)
        lines.append(re.sub(r"\|  (?=\|)", "| ", f"| `{r.name}` | {r.what} | {count:,} | {_task_tags(r.name)} |"))
    return "\n".join(lines)


def detection_table(rows: list[Row]) -> str:
    lines = ["| model | what | trainable parameters | paper | official weights (tags) |", "|---|---|---|---|---|"]
    for r in rows:
        args = "".join(f" with `{k}={v}`" for k, v in r.kwargs.items())
        count = _params(r.name, trainable=True, **r.kwargs)
        tags = "" if r.kwargs else _task_tags(r.name)
        lines.append(re.sub(r"\|  (?=\|)", "| ", f"| `{r.name}`{args} | {r.what} | {count:,} | {r.paper} | {tags} |"))
    return "\n".join(lines)


def _matching(*prefixes: str) -> Callable[[], list[str]]:
    """Classification models whose names start with a prefix, in PAPER_MODELS' order (the papers' order)."""
    return lambda: [n for n in PAPER_MODELS if n.startswith(prefixes)]


# Table id -> (page in docs/models/, the function that makes it).
TABLES: dict[str, tuple[str, Callable[[], str]]] = {
    "densenet": ("densenet.md", lambda: classification_table(_matching("densenet", "wide_densenet")())),
    "dsod": ("dsod.md", lambda: classification_table(_matching("dsod_")())),
    "dsod-detection": ("dsod.md", lambda: detection_table(DSOD_DETECTION_ROWS)),
    "peleenet": ("peleenet.md", lambda: classification_table(_matching("peleenet")())),
    "pelee-detection": ("peleenet.md", lambda: detection_table(PELEE_DETECTION_ROWS)),
    "condensenet": ("condensenet.md", lambda: classification_table(_matching("condensenet")())),
    "msdnet": ("msdnet.md", lambda: classification_table(_matching("msdnet")())),
    "fc_densenet": ("fc_densenet.md", lambda: segmentation_table(SEGMENTATION_ROWS)),
    "dense_aspp": ("dense_aspp.md", lambda: segmentation_table(DENSE_ASPP_ROWS)),
    "deeplab": ("dense_aspp.md", lambda: segmentation_table(DEEPLAB_ROWS)),
}


def check_coverage() -> None:
    """Every registered model is in a table, and every name in a table is registered."""
    rows = SEGMENTATION_ROWS + DENSE_ASPP_ROWS + DEEPLAB_ROWS + DSOD_DETECTION_ROWS + PELEE_DETECTION_ROWS
    tabled = set(PAPER_MODELS) | {r.name for r in rows}
    registered = set(db.list_models())
    if tabled != registered:
        raise SystemExit(
            f"tools/model_tables.py: registered but in no table: {sorted(registered - tabled)}; "
            f"in a table but not registered: {sorted(tabled - registered)}"
        )


def markers(table_id: str) -> tuple[str, str]:
    return f"<!-- model-table:{table_id} start -->", f"<!-- model-table:{table_id} end -->"


def splice(text: str, table_id: str, table: str) -> str:
    """``text`` with the table between its markers replaced by ``table``."""
    start, end = markers(table_id)
    if text.count(start) != 1 or text.count(end) != 1:
        raise ValueError(f"expected one {start} and one {end}")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{table}\n{end}{tail}"


def render(docs: Path = DOCS) -> dict[Path, str]:
    """Every page of docs/models/ that holds a table, as the tool would write it."""
    check_coverage()
    pages: dict[Path, str] = {}
    for table_id, (page, make) in TABLES.items():
        path = docs / page
        pages[path] = splice(pages.get(path) or path.read_text(encoding="utf-8"), table_id, make())
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite the tables in docs/models/*.md")
    group.add_argument("--check", action="store_true", help="exit status 1 if a committed table differs")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        check_coverage()
        for table_id, (page, make) in TABLES.items():
            print(f"docs/models/{page} ({table_id}):\n{make()}\n")
        return 0
    stale = [path for path, text in render().items() if path.read_text(encoding="utf-8") != text]
    if args.write:
        for path, text in render().items():
            path.write_text(text, encoding="utf-8")
        print("rewrote", ", ".join(str(p.relative_to(REPO)) for p in stale) or "nothing (all current)")
        return 0
    for path in stale:
        print(f"{path.relative_to(REPO)}: tables differ from the registry; run python tools/model_tables.py --write")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

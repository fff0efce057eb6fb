"""What each registered backbone and weight tag is published to score, and where: the metadata torchvision keeps in
``weights.meta`` and mmpretrain in its metafiles.

:data:`PUBLISHED` is written down from the papers' tables and the official READMEs (docs/reference.md has them);
the weights torchvision serves take their metrics from torchvision's own ``weights.meta``. Each family's pretrained
configs carry the published result in timm's fields (``notes``, ``origin_url``, ``paper_name``), so it travels with
``pretrained_cfg`` through timm, ``save_for_hf`` and the Hub; :func:`weights_meta` gives all of it as one dict, with
what is computed from the model (parameters, GFLOPs at the input size with ``torch.utils.flop_counter``) and what is
known of the file. ``tools/model_tables.py`` prints the published results in the model tables.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torchvision
from timm.data import ImageNetInfo
from timm.models import split_model_name_tag
from timm.models._builder import resolve_pretrained_cfg

from ..flops import count_flops
from ..registry import create_model

__all__ = [
    "NOT_PUBLISHED",
    "OFFICIAL",
    "PUBLISHED",
    "Published",
    "describe",
    "published_cfg",
    "published_result",
    "weights_meta",
    "with_published",
]

_DENSENET_README = "https://github.com/liuzhuang13/DenseNet"
_DENSENET_PAPER = "Huang et al., CVPR 2017, Table 2"


class Published(NamedTuple):
    """A published result: ``metrics`` (name -> value, as the source states it), ``source`` (table or README),
    ``url`` (where the source and any weights are), ``weights`` (where a weight file is published, or why none is);
    for an official file, its size as the release states it (``file_size_mb``) and the pretrained-config fields its
    weights need (``cfg``: the preprocessing they were trained with, classes)."""

    metrics: dict[str, float]
    source: str
    url: str
    weights: str
    file_size_mb: float | None = None
    cfg: dict[str, Any] | None = None
    model_args: dict[str, Any] | None = None  # what create_model(name.tag) builds by default: the file's classes, boxes


def _imagenet_error(error: float, weights: str) -> Published:
    return Published({"ImageNet-1k top-1 error": error}, "official DenseNet README (Torch models)", _DENSENET_README,
                     weights)  # fmt: skip


def _cifar(c10: float | None, c100: float | None, source: str = _DENSENET_PAPER, url: str = _DENSENET_README):
    metrics = {k: v for k, v in (("C10+ error", c10), ("C100+ error", c100)) if v is not None}
    return Published(metrics, source, url, "none published")


_T7 = "official release, Lua Torch .t7 (loads as a file, or tools/convert_weights.py)"
_CONDENSE = "https://github.com/ShichenLiu/CondenseNet"
_MSD = "https://github.com/kalviny/MSDNet-PyTorch"

# Registered name or name.tag -> its published result. A name without an entry has none (a test names them).
PUBLISHED: dict[str, Published] = {
    "densenet_bc121_k32": _imagenet_error(25.0, _T7),
    "densenet_bc169_k32": _imagenet_error(23.6, _T7),
    "densenet_bc201_k32": _imagenet_error(22.5, _T7),
    "densenet_bc161_k48": _imagenet_error(22.2, _T7),
    "densenet_bc264_k32": _imagenet_error(22.1, _T7),
    "densenet_bc232_k48": _imagenet_error(21.2, _T7),
    "densenet_bc264_k48": _imagenet_error(20.4, _T7 + ", trained with a cosine schedule"),
    "densenet40_k12_cifar": _cifar(5.24, 24.42),
    "densenet100_k12_cifar": _cifar(4.10, 20.20),
    "densenet100_k24_cifar": _cifar(3.74, 19.25),
    "densenet_bc100_k12_cifar": _cifar(4.51, 22.27),
    "densenet_bc250_k24_cifar": _cifar(3.62, 17.60),
    "densenet_bc190_k40_cifar": _cifar(3.46, 17.18),
    "wide_densenet_bc40_k36_cifar": _cifar(4.58, 22.30, "official DenseNet README, Wide-DenseNet-BC"),
    "wide_densenet_bc40_k48_cifar": _cifar(3.99, 20.29, "official DenseNet README, Wide-DenseNet-BC"),
    "wide_densenet_bc40_k60_cifar": _cifar(4.01, 19.99, "official DenseNet README, Wide-DenseNet-BC"),
    "peleenet": Published(
        {"ImageNet-1k top-1": 72.6},
        "Wang et al., NeurIPS 2018, Table 3 (official checkpoint: 72.08)",
        "https://github.com/Robert-JunWang/PeleeNet",
        "official release, PyTorch peleenet_acc7208.pth.tar",
    ),  # fmt: skip
    "condensenet74_c4_g4": Published(
        {"ImageNet-1k top-1 error": 26.2},
        "Huang et al., CVPR 2018, Table 5",
        _CONDENSE,
        "official release, PyTorch (converted form)",
    ),  # fmt: skip
    "condensenet74_c8_g8": Published(
        {"ImageNet-1k top-1 error": 29.0},
        "Huang et al., CVPR 2018, Table 5",
        _CONDENSE,
        "official release, PyTorch (converted form)",
    ),  # fmt: skip
    "condensenet86_cifar": Published(
        {"C10+ error": 5.06}, "Huang et al., CVPR 2018, Table 4 (official README)", _CONDENSE, "none published"
    ),  # fmt: skip
    "condensenet182_cifar": Published(
        {"C10+ error": 3.76, "C100+ error": 18.47},
        "Huang et al., CVPR 2018, Table 4 (official README)",
        _CONDENSE,
        "none published",
    ),  # fmt: skip
}
for _name in ("condensenet74_c4_g4", "condensenet74_c8_g8", "condensenet86_cifar", "condensenet182_cifar"):
    PUBLISHED[f"{_name}_converted"] = PUBLISHED[_name]  # the same network, deployed
# What has no single published number, and why (a test holds every registered backbone to one of the two).
NOT_PUBLISHED: dict[str, str] = {
    "dsod_ds64_192_48_1": "a detector backbone: DSOD300 is published on VOC and COCO (docs/models/dsod.md)",
    "dsod_ds64_256_64_1": "a detector backbone: DSOD300-lite is published on VOC (docs/models/dsod.md)",
    "msdnet_anytime_cifar": "accuracy per budget (curves, Huang et al., ICLR 2018, Fig. 5 and 7), no single number",
    "msdnet_budgeted_cifar": "accuracy per budget (curves, Huang et al., ICLR 2018, Fig. 5 and 7), no single number",
    "msdnet_imagenet": "accuracy per budget (curves, Huang et al., ICLR 2018, Fig. 5 and 7), no single number",
}

# Weight releases of models without one published number (MSDNet-PyTorch releases its ImageNet models only).
RELEASES: dict[str, Published] = {
    "msdnet_imagenet": Published({}, "MSDNet-PyTorch README", _MSD, "official release, PyTorch (MSDNet-PyTorch README)")
}

# The official weight files, each under a tag (``name.tag``), that no URL serves to a program (Google Drive,
# Dropbox, or withdrawn links): ``create_model(name.tag, pretrained=True)`` says where the file is; it loads with
# ``pretrained_cfg_overlay=dict(file=...)`` (``.t7`` and ``.caffemodel`` files too) and the tag's config carries the
# preprocessing the weights were trained with. Sizes are the READMEs'.
_DSOD = "https://github.com/szq0214/DSOD"
_PELEE = "https://github.com/Robert-JunWang/Pelee"
_PELEENET = "https://github.com/Robert-JunWang/PeleeNet"
_T7_WITHDRAWN = "official release, Lua Torch .t7 (the README's download links are withdrawn: 'deprecated')"
# Caffe's data layers: BGR images in 0-255 minus a mean (times a scale); the first convolution is turned to RGB on
# loading (models/caffe.py), so these are RGB fractions of 1.
_DSOD_INPUT = dict(mean=(123 / 255, 117 / 255, 104 / 255), std=(1 / 255,) * 3, license="bsd-2-clause")
_PELEE_INPUT = dict(mean=(123.68 / 255, 116.78 / 255, 103.94 / 255), std=(1 / (0.017 * 255),) * 3, license="apache-2.0")
_COCO = dict(num_classes=81)  # the tag's config; its model_args build the model with them (heads/ssd.py's boxes)


def _t7(error: float, size_mb: float, cosine: bool = False) -> Published:
    source = "official DenseNet README (Torch models" + (", DenseNet-cosine)" if cosine else ")")
    return Published({"ImageNet-1k top-1 error": error}, source, _DENSENET_README, _T7_WITHDRAWN, size_mb,
                     dict(license="bsd-3-clause"))  # fmt: skip


def _caffe(metrics: dict[str, float], source: str, url: str, file: str, size_mb: float | None,
           model_args: dict[str, Any] | None = None, **cfg) -> Published:  # fmt: skip
    return Published(metrics, source, url, f"official release, Caffe {file}",
                     size_mb, cfg, model_args)  # fmt: skip


OFFICIAL: dict[str, Published] = {
    "densenet_bc121_k32.t7_in1k": _t7(25.0, 64.5),
    "densenet_bc169_k32.t7_in1k": _t7(23.6, 114.4),
    "densenet_bc201_k32.t7_in1k": _t7(22.5, 161.8),
    "densenet_bc161_k48.t7_in1k": _t7(22.2, 230.8),
    "densenet_bc264_k32.t7_in1k": _t7(22.1, 256),
    "densenet_bc264_k32.t7_cosine_in1k": _t7(21.6, 256, cosine=True),
    "densenet_bc232_k48.t7_in1k": _t7(21.2, 426),
    "densenet_bc264_k48.t7_cosine_in1k": _t7(20.4, 557, cosine=True),
    "peleenet.official_in1k": Published(
        {"ImageNet-1k top-1": 72.08},
        "PeleeNet README and checkpoint name",
        _PELEENET,
        "official release, PyTorch weights/peleenet_acc7208.pth.tar in the repository (official key names load)",
        cfg=dict(license="apache-2.0"),
    ),  # fmt: skip
    "peleenet.caffe_in1k": Published(
        {},
        "PeleeNet repository (no score published for the Caffe file; its input channel order is not stated)",
        _PELEENET,
        "official release, Caffe caffe/peleenet.caffemodel in the repository (tools/convert_weights.py "
        "--input-order bgr or rgb: check top-1 with tools/eval_cls.py)",
        cfg=dict(license="apache-2.0"),
    ),  # fmt: skip
    "condensenet74_c4_g4_converted.official_in1k": Published(
        {"ImageNet-1k top-1 error": 26.2},
        "CondenseNet README",
        _CONDENSE,
        "official release, PyTorch converted_condensenet_4.pth.tar",
        18.69,
        dict(license="mit"),
    ),  # fmt: skip
    "condensenet74_c8_g8_converted.official_in1k": Published(
        {"ImageNet-1k top-1 error": 29.0},
        "CondenseNet README",
        _CONDENSE,
        "official release, PyTorch converted_condensenet_8.pth.tar",
        11.68,
        dict(license="mit"),
    ),  # fmt: skip
    "msdnet_imagenet.official_in1k": Published(
        {},
        "MSDNet-PyTorch README (accuracy per budget: curves, Huang et al., ICLR 2018, Fig. 7)",
        _MSD,
        "official release, PyTorch (official key names load)",
        cfg=dict(license="mit"),
    ),  # fmt: skip
    "dsod300.caffe_voc0712": _caffe(
        {"VOC2007 test mAP": 77.7}, "DSOD README (07+12)", _DSOD, "DSOD300 VOC07+12", 59.2, **_DSOD_INPUT
    ),  # fmt: skip
    "dsod300.caffe_voc0712_bs12": _caffe(
        {"VOC2007 test mAP": 78.9},
        "DSOD README (07+12, batch 12 per GPU)",
        _DSOD,
        "DSOD300 VOC07+12 bs=12",
        59.2,
        **_DSOD_INPUT,
    ),  # fmt: skip
    "dsod300.caffe_voc0712_coco": _caffe(
        {"VOC2007 test mAP": 81.7}, "DSOD README (07+12+COCO)", _DSOD, "DSOD300 VOC07+12+COCO", 59.2, **_DSOD_INPUT
    ),  # fmt: skip
    "dsod300.caffe_voc0712plus": _caffe(
        {"VOC2012 test mAP": 76.3}, "DSOD README (07++12)", _DSOD, "DSOD300 VOC07++12", 59.2, **_DSOD_INPUT
    ),  # fmt: skip
    "dsod300.caffe_voc0712plus_coco": _caffe(
        {"VOC2012 test mAP": 79.3}, "DSOD README (07++12+COCO)", _DSOD, "DSOD300 VOC07++12+COCO", 59.2, **_DSOD_INPUT
    ),  # fmt: skip
    "dsod300.caffe_coco": _caffe(
        {"COCO test-dev AP": 29.3},
        "DSOD README (COCO trainval)",
        _DSOD,
        "DSOD300 COCO (the tag builds 81 classes, COCO's boxes)",
        87.2,
        dict(num_classes=81, priors="coco"),
        **_DSOD_INPUT,
        **_COCO,
    ),  # fmt: skip
    "dsod300_lite.caffe_voc0712": _caffe(
        {"VOC2007 test mAP": 76.7}, "DSOD README (07+12)", _DSOD, "DSOD300_lite VOC07+12", 41.8, **_DSOD_INPUT
    ),  # fmt: skip
    "pelee.caffe_voc0712": _caffe(
        {"VOC2007 test mAP": 70.9}, "Pelee README (07+12)", _PELEE, "Pelee VOC07+12", 20.3, **_PELEE_INPUT
    ),  # fmt: skip
    "pelee.caffe_voc0712_coco": _caffe(
        {"VOC2007 test mAP": 76.4},
        "Pelee README (07+12+COCO)",
        _PELEE,
        "Pelee VOC07+12+COCO, also as 'Model Merged BN with Conv', which loads too (the tag builds the COCO "
        "script's boxes, which it was trained with)",
        20.3,
        dict(priors="pelee_coco"),
        **_PELEE_INPUT,
    ),  # fmt: skip
    "pelee.caffe_coco": _caffe(
        {"COCO test-dev AP": 22.4, "COCO test-dev AP50": 38.3},
        "Pelee README (COCO)",
        _PELEE,
        "Pelee COCO (the tag builds 81 classes, the COCO script's boxes)",
        21.0,
        dict(num_classes=81, priors="pelee_coco"),
        **_PELEE_INPUT,
        **_COCO,
    ),  # fmt: skip
    "dense_aspp161.official_cityscapes": Published(
        {
            "Cityscapes val mIoU": 79.9,
            "Cityscapes val mIoU, multi-scale": 80.6,
            "Cityscapes test mIoU, multi-scale": 79.5,
        },
        "DenseASPP README (checkpoint table)",
        "https://github.com/DeepMotionAIResearch/DenseASPP",
        "official release, PyTorch DenseASPP161 checkpoint (official key names load)",
        142.7,
    ),
    "fc_densenet103.lasagne_camvid": Published(
        {"CamVid test mIoU": 66.9, "CamVid test global accuracy": 91.5},
        "Jegou et al., CVPRW 2017, Table 2 (the FC-DenseNet README: its test.py reproduces them)",
        "https://github.com/SimJeg/FC-DenseNet",
        "official release, Lasagne weights/FC-DenseNet103_weights.npz in the repository, "
        "https://github.com/SimJeg/FC-DenseNet/raw/master/weights/FC-DenseNet103_weights.npz (loads as a file)",
        cfg=dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),  # [0, 1] pixels: the data pipeline is not released
    ),
}

# Where each official file is, as its README links it (Google Drive and Dropbox pages: no program downloads them).
_DRIVE = "https://drive.google.com/open?id="
_LINKS = {
    "dsod300.caffe_voc0712": _DRIVE + "0B4cvsEOB5eUCaGU3MkRkOENRWWc",
    "dsod300.caffe_voc0712_bs12": _DRIVE + "1_ur6TYiLPUGsHoZQM1yxAZ2AXgSe-Qxm",
    "dsod300.caffe_voc0712_coco": _DRIVE + "0B4cvsEOB5eUCa3lDWTNIa1BfMUU",
    "dsod300.caffe_voc0712plus": _DRIVE + "0B4cvsEOB5eUCV2cyeU9qZVlhSEk",
    "dsod300.caffe_voc0712plus_coco": _DRIVE + "0B4cvsEOB5eUCLXhGdlUtT3B2cDQ",
    "dsod300.caffe_coco": _DRIVE + "0B4cvsEOB5eUCYXoxcGRCbVFMNms",
    "dsod300_lite.caffe_voc0712": _DRIVE + "0B4cvsEOB5eUCQVozLVhONS1EX2s",
    "pelee.caffe_voc0712": _DRIVE + "1KJHKYQ2nChZXlxroZRpg-tRsksTXUhe9",
    "pelee.caffe_voc0712_coco": _DRIVE
    + "1ZKAP9d7Hzxi9Jc09ApL2BH1SgXXZPJk4 (merged form: "
    + _DRIVE
    + "1AH46csPPufZl3NYwk6xcHDmnYVwmN05e)",
    "pelee.caffe_coco": _DRIVE + "1NXfmytr_55Njg8h6MXVflo3-tvhxYdm8",
    "condensenet74_c4_g4_converted.official_in1k": "https://www.dropbox.com/s/sj26rm4so3uhdmg/converted_condensenet_4.pth.tar",
    "condensenet74_c8_g8_converted.official_in1k": "https://www.dropbox.com/s/aj1xpd6zcnclous/converted_condensenet_8.pth.tar",
    "msdnet_imagenet.official_in1k": "https://www.dropbox.com/sh/7p758wfcq4wm6lf/AACU4hFtV1_4UQavexrsSs1Ba",
    "dense_aspp161.official_cityscapes": "https://drive.google.com/file/d/1sCr-OkMUayaHAijdQrzndKk2WW78MVZG/view",
}
for _tag, _link in _LINKS.items():  # the address each entry's file has, as its README links it
    OFFICIAL[_tag] = OFFICIAL[_tag]._replace(weights=f"{OFFICIAL[_tag].weights}, at {_link}")

# Tags whose weights torchvision serves: their metrics are torchvision's (weights.meta), read where needed.
TORCHVISION_WEIGHTS = {
    "densenet_bc121_k32.tv_in1k": "DenseNet121_Weights.IMAGENET1K_V1",
    "densenet_bc169_k32.tv_in1k": "DenseNet169_Weights.IMAGENET1K_V1",
    "densenet_bc201_k32.tv_in1k": "DenseNet201_Weights.IMAGENET1K_V1",
    "densenet_bc161_k48.tv_in1k": "DenseNet161_Weights.IMAGENET1K_V1",
}


def _torchvision_weights(tag: str) -> torchvision.models.WeightsEnum:
    enum_name, member = TORCHVISION_WEIGHTS[tag].split(".")
    return getattr(getattr(torchvision.models, enum_name), member)


def published_result(name: str) -> Published | None:
    """The published result of a registered name, or of a ``name.tag``: the tag's own where its weights have one
    (torchvision's), else its name's; None if nothing is published."""
    if name in TORCHVISION_WEIGHTS:
        weights = _torchvision_weights(name)
        metrics = {f"ImageNet-1k {k}": v for k, v in weights.meta["_metrics"]["ImageNet-1K"].items()}
        return Published(metrics, f"torchvision {TORCHVISION_WEIGHTS[name]}", weights.url, weights.url)
    if name in OFFICIAL:
        return OFFICIAL[name] if OFFICIAL[name].metrics else None
    return PUBLISHED.get(split_model_name_tag(name)[0])


def describe(result: Published) -> str:
    """One line: the metrics and their source, e.g. ``ImageNet-1k top-1 error 25.0 (official DenseNet README ...)``."""
    metrics = ", ".join(f"{k} {v:g}" for k, v in result.metrics.items())
    return f"{metrics} ({result.source})"


def published_cfg(name: str) -> dict[str, Any]:
    """timm ``pretrained_cfg`` fields that carry ``name``'s published result (``notes``, ``origin_url``), for the
    families' default configs: empty where nothing is published."""
    result = published_result(name)
    release = OFFICIAL.get(name)
    if result is None and release is not None:  # an official file without a published number
        return {
            "notes": (f"published: none; {release.source}", f"weights: {release.weights}"),
            "origin_url": release.url,
        }
    name = split_model_name_tag(name)[0]
    if result is None:
        return {"notes": (f"published: none; {NOT_PUBLISHED[name]}",)} if name in NOT_PUBLISHED else {}
    return {"notes": (f"published: {describe(result)}", f"weights: {result.weights}"), "origin_url": result.url}


def no_weights_message(name: str) -> str:
    """What ``pretrained=True`` says for a model or tag that has no file to download: where weights are published,
    if anywhere, and how to load a file."""
    base = split_model_name_tag(name)[0]
    result = OFFICIAL.get(name) or published_result(name) or RELEASES.get(base)
    if result is not None and result.weights != "none published":
        where = f"its weights are published as {result.weights} ({result.url})"
    else:
        tags = [tag for tag in OFFICIAL if split_model_name_tag(tag)[0] == base]
        where = (
            f"the official weights are under its tags {', '.join(tags)}" if tags else "no weights are published for it"
        )
    return (
        f"{name} has no weights to download; {where}. Load a downloaded file or one of your own (safetensors, torch, "
        f"or an official .t7, .caffemodel or .npz) with pretrained=True, pretrained_cfg_overlay=dict(file=PATH)"
    )


def check_weights_available(variant: str, pretrained: bool, pretrained_cfg: Any, overlay: dict[str, Any]) -> None:
    """Refuse ``pretrained=True`` for a config with no source (url, file, Hub id), in :func:`no_weights_message`'s
    words instead of timm's ("No pretrained weights exist"), which say nothing of where weights are."""
    if not pretrained:
        return
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg, overlay)
    if not (cfg.url or cfg.file or cfg.hf_hub_id or cfg.state_dict):
        raise ValueError(no_weights_message(f"{variant}.{cfg.tag}" if cfg.tag else variant))


def with_published(cfgs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A family's ``{name or name.tag: pretrained config}`` with each one's :func:`published_cfg` fields added, and
    a config for each :data:`OFFICIAL` tag of its names (the name's config with the file's preprocessing)."""
    cfgs = dict(cfgs)
    for tag, release in OFFICIAL.items():
        base = split_model_name_tag(tag)[0]
        of_base = [cfg for key, cfg in cfgs.items() if split_model_name_tag(key)[0] == base]
        if of_base:  # the name's (first) config without its file and licence: the release's are its own
            own = {k: v for k, v in of_base[0].items() if k not in ("url", "file", "hf_hub_id", "license")}
            cfgs[tag] = {**own, **(release.cfg or {})}
    return {key: {**published_cfg(key), **cfg} for key, cfg in cfgs.items()}


_CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # a checkout's; an installed package has none


def recipes(name: str) -> list[str]:
    """The training configs of a registered model in the repository's ``configs/`` (paths relative to the
    repository; a converted CondenseNet's are its training form's): those whose ``model`` is of that type."""
    base = split_model_name_tag(name)[0].removesuffix("_converted")
    marker = f'model = dict(type="{base}"'
    found = [p for p in sorted(_CONFIGS.glob("*/*.py")) if marker in p.read_text(encoding="utf-8")]
    return [str(p.relative_to(_CONFIGS.parent)) for p in found]


@functools.cache
def weights_meta(name: str) -> dict[str, Any]:
    """Everything known of a registered model (its default tag) or ``name.tag``, as torchvision's ``weights.meta``,
    under the resolved ``name.tag`` (aliases too): the published
    metrics and their source, where weights are published, parameters, GFLOPs at the config's input size (one image,
    ``torch.utils.flop_counter``: 2 per multiply-add), input sizes, license, class names (ImageNet's for 1000-class
    configs, from timm's ``ImageNetInfo``), the training configs (:func:`recipes`) and, for a file, its size as
    published and, where its digest is known (torchvision's), its sha256 prefix."""
    with torch.device("meta"):
        model = create_model(name)
        classes = model.pretrained_cfg.get("num_classes")
        if classes and getattr(model, "num_classes", classes) != classes:  # a task tag of other classes (COCO's)
            model = create_model(name, num_classes=classes)
    cfg = dict(model.pretrained_cfg)
    # what create_model(name, pretrained=True) loads: an alias resolved, a bare name's default tag
    name = f"{cfg['architecture']}.{cfg['tag']}" if cfg.get("tag") else cfg["architecture"]
    base = cfg["architecture"]
    result = published_result(name)
    meta: dict[str, Any] = {
        "name": name,
        "metrics": dict(result.metrics) if result else {},
        "source": result.source if result else NOT_PUBLISHED.get(base, ""),
        "weights": result.weights if result else "none published",
        "num_params": sum(p.numel() for p in model.parameters()),
        "gflops": count_flops(model, (1, *cfg["input_size"]), device="meta") / 1e9,  # the papers' "FLOPs" are / 2
        "input_size": tuple(cfg["input_size"]),
        "min_input_size": tuple(cfg.get("min_input_size") or ()),
        "test_input_size": tuple(cfg.get("test_input_size") or cfg["input_size"]),
        "license": cfg.get("license"),
        "paper_ids": cfg.get("paper_ids"),
        "categories": ImageNetInfo().label_descriptions() if cfg.get("num_classes") == 1000 else None,
        "recipes": recipes(name),
        "official_tags": [tag for tag in OFFICIAL if split_model_name_tag(tag)[0] == base],
    }
    if name in OFFICIAL:
        meta["weights"] = OFFICIAL[name].weights
        meta["file_size_mb"] = OFFICIAL[name].file_size_mb
    if name in TORCHVISION_WEIGHTS:
        weights = _torchvision_weights(name)
        meta["file_size_mb"] = weights.meta["_file_size"]
        meta["sha256_prefix"] = weights.url.rsplit("-", 1)[1].split(".")[0]  # torchvision names files by it
        meta["recipe"] = weights.meta["recipe"]
    return meta

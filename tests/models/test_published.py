"""Weight metadata (models/published.py): every backbone's published result or the reason it has none, in its
``pretrained_cfg`` and through ``weights_meta``; the tags torchvision serves carry torchvision's own numbers, checked
against torchvision's ``weights.meta`` (which we did not write), and the computed counts against its counts and the
papers'."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
import torchvision

import densebackbones as db
from densebackbones.models import published
from densebackbones.models.published import (
    NOT_PUBLISHED,
    OFFICIAL,
    PUBLISHED,
    TORCHVISION_WEIGHTS,
    published_cfg,
    weights_meta,
)

REPO = Path(__file__).resolve().parents[2]
BACKBONES = db.list_models(task="classification")


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_has_a_published_result_or_says_why_not(name):
    assert (name in PUBLISHED) != (name in NOT_PUBLISHED), name
    cfg = timm.models.get_pretrained_cfg(name)  # its default tag's
    assert cfg.notes and cfg.notes[0].startswith("published: "), name
    if f"{name}.{cfg.tag}" in TORCHVISION_WEIGHTS:
        assert TORCHVISION_WEIGHTS[f"{name}.{cfg.tag}"] in cfg.notes[0]
    elif name in PUBLISHED:
        assert PUBLISHED[name].source in cfg.notes[0] and PUBLISHED[name].metrics


@pytest.mark.parametrize("tag", list(TORCHVISION_WEIGHTS))
def test_torchvision_tags_carry_torchvisions_numbers(tag):
    depth = tag.split("_")[1].removeprefix("bc")  # densenet_bc121_k32.tv_in1k: torchvision's densenet121
    weights = torchvision.models.get_model_weights(f"densenet{depth}").IMAGENET1K_V1
    meta = weights_meta(tag)
    assert meta["metrics"]["ImageNet-1k acc@1"] == weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert meta["num_params"] == weights.meta["num_params"]
    assert meta["gflops"] / 2 == pytest.approx(weights.meta["_ops"], rel=0.01)  # torchvision counts multiply-adds
    assert meta["weights"] == weights.url == timm.models.get_pretrained_cfg(tag).url
    assert meta["file_size_mb"] == weights.meta["_file_size"] and meta["sha256_prefix"] in weights.url
    assert len(meta["categories"]) == 1000 and meta["categories"][0].lower().startswith("tench")


def test_computed_counts_match_the_papers():
    assert weights_meta("peleenet")["gflops"] / 2 == pytest.approx(0.508, rel=0.01)  # 508M MACs (README, Table 1)
    assert weights_meta("densenet_bc100_k12_cifar")["num_params"] == 769162  # docs/reference.md, C10
    assert weights_meta("msdnet_imagenet")["metrics"] == {} and "curves" in weights_meta("msdnet_imagenet")["source"]


def test_the_metadata_travels_with_the_weights_to_the_hub_format(tmp_path):
    model = timm.create_model("densenet40_k12_cifar", growth_rate=4, block_config=(1, 1, 1))
    timm.models.save_for_hf(model, tmp_path, model_args=dict(growth_rate=4, block_config=(1, 1, 1)))
    again = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    assert tuple(again.pretrained_cfg["notes"]) == published_cfg("densenet40_k12_cifar")["notes"]
    assert torch.equal(again.classifier.weight, model.classifier.weight)


WITHOUT_DOWNLOAD = [
    name
    for name in BACKBONES
    if not (timm.models.get_pretrained_cfg(name).url or timm.models.get_pretrained_cfg(name).hf_hub_id)
]


def test_the_backbones_with_weights_to_download_are_torchvisions():
    assert sorted(set(BACKBONES) - set(WITHOUT_DOWNLOAD)) == sorted(tag.split(".")[0] for tag in TORCHVISION_WEIGHTS)


@pytest.mark.parametrize("name", WITHOUT_DOWNLOAD)
def test_pretrained_without_a_file_says_where_weights_are(name):
    for create in (db.create_model, timm.create_model):
        with pytest.raises(ValueError, match=f"^{name}.* has no weights to download; .*pretrained_cfg_overlay"):
            create(name, pretrained=True)
    message = published.no_weights_message(name)
    release = PUBLISHED.get(name) or published.RELEASES.get(name)
    if release is not None and release.weights != "none published":
        assert release.url in message


def test_weights_meta_describes_what_pretrained_loads():
    # an alias and a bare name resolve to the default tag, whose weights pretrained=True would load
    tagged = weights_meta("densenet_bc121_k32.tv_in1k")
    for name in ("densenet121", "densenet_bc121_k32"):
        meta = weights_meta(name)
        assert meta["name"] == "densenet_bc121_k32.tv_in1k" and meta["metrics"] == tagged["metrics"]


@pytest.mark.parametrize("tag", list(OFFICIAL))
def test_every_official_release_is_a_tag_that_says_where_its_file_is(tag):
    release = OFFICIAL[tag]
    with torch.device("meta"):
        cfg = db.create_model(tag).pretrained_cfg  # registered, with its release's fields
        with pytest.raises(ValueError, match=f"^{re.escape(tag)} has no weights to download; .*pretrained_cfg_overlay"):
            db.create_model(tag, pretrained=True)
    assert cfg["origin_url"] == release.url and any(release.weights in note for note in cfg["notes"])
    assert release.weights in published.no_weights_message(tag) and release.url in published.no_weights_message(tag)
    meta = weights_meta(tag)
    assert meta["name"] == tag and meta["metrics"] == release.metrics and meta["weights"] == release.weights
    assert meta["file_size_mb"] == release.file_size_mb
    assert meta["recipes"]
    assert all((REPO / recipe).is_file() for recipe in meta["recipes"])
    assert {k: cfg[k] for k in release.cfg or {}} == (release.cfg or {})


def test_the_caffe_tags_normalise_as_the_official_data_layers_do():
    # Caffe: (BGR pixel in 0-255 - mean) * scale; the tag's RGB (x - mean) / std must give the same on any pixel.
    rgb = torch.tensor([0.1, 0.5, 0.9])
    for tag, caffe_mean_bgr, scale in (("dsod300.caffe_voc0712", (104, 117, 123), 1.0),
                                       ("pelee.caffe_coco", (103.94, 116.78, 123.68), 0.017)):  # fmt: skip
        with torch.device("meta"):
            cfg = db.create_model(tag).pretrained_cfg
        ours = (rgb - torch.tensor(cfg["mean"])) / torch.tensor(cfg["std"])
        caffe = (rgb.flip(0) * 255 - torch.tensor(caffe_mean_bgr, dtype=torch.float32)) * scale
        torch.testing.assert_close(ours, caffe.flip(0))
    assert weights_meta("pelee.caffe_coco")["metrics"]["COCO test-dev AP"] == 22.4


def test_a_bare_name_points_at_its_official_tags():
    assert "dsod300.caffe_voc0712" in published.no_weights_message("dsod300")


def test_official_tags_carry_their_repositorys_license():
    licenses = {tag: weights_meta(tag)["license"] for tag in OFFICIAL}
    assert licenses["densenet_bc264_k32.t7_in1k"] == "bsd-3-clause" and licenses["dsod300.caffe_coco"] == "bsd-2-clause"
    assert licenses["pelee.caffe_voc0712"] == licenses["peleenet.official_in1k"] == "apache-2.0"
    assert licenses["condensenet74_c8_g8_converted.official_in1k"] == licenses["msdnet_imagenet.official_in1k"] == "mit"
    # none stated in their repositories: not invented
    assert licenses["fc_densenet103.lasagne_camvid"] is None and licenses["dense_aspp161.official_cityscapes"] is None


def test_a_tag_of_other_classes_counts_its_own_model():
    with torch.device("meta"):
        coco = db.create_model("pelee", num_classes=81)
    assert weights_meta("pelee.caffe_coco")["num_params"] == sum(p.numel() for p in coco.parameters()) == 5_981_012


def test_a_coco_tag_builds_the_files_classes_and_boxes_and_a_bare_name_lists_its_tags():
    from densebackbones.heads.ssd import COCO_PRIORS, NAMED_PRIORS, PELEE_COCO_PRIORS

    with torch.device("meta"):
        pelee, dsod = db.create_model("pelee.caffe_coco"), db.create_model("dsod300.caffe_coco")
        voc_trained_on_coco_boxes = db.create_model("pelee.caffe_voc0712_coco")
        chosen = db.create_model("pelee.caffe_coco", num_classes=21, priors="voc")  # the caller's arguments win
    # (the boxes' sizes: a model fits its steps and feature sizes to its own maps)
    assert (pelee.num_classes, pelee.prior_config.min_sizes) == (81, PELEE_COCO_PRIORS.min_sizes)
    assert (dsod.num_classes, dsod.prior_config.min_sizes) == (81, COCO_PRIORS.min_sizes)
    voc_coco = voc_trained_on_coco_boxes
    assert (voc_coco.num_classes, voc_coco.prior_config.min_sizes) == (21, PELEE_COCO_PRIORS.min_sizes)
    assert (chosen.num_classes, chosen.prior_config.min_sizes) == (21, NAMED_PRIORS["voc"].min_sizes)
    assert "dsod300.caffe_coco" in weights_meta("dsod300")["official_tags"]

"""OpenMMLab as a client: an mmpretrain ``ImageClassifier`` whose backbone is ``densebackbones.DenseNetBackbone``, from
a config file as users write one (``custom_imports``, the scoped type name, mmpretrain's arch name), trained one step
and run for prediction. mmpretrain 1.2 imports ``mmcv``; the 'dev' extra installs mmcv-lite (pure Python, no compiled
ops), which mmpretrain's classifiers do not need. mmsegmentation cannot be tested that way: importing its models loads
``mmcv.ops`` (compiled; docs/timm_suite.md, "Clients")."""

from __future__ import annotations

import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from densebackbones.mm import DenseNetBackbone

CONFIG = """
custom_imports = dict(imports=['densebackbones'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        type='ClsDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True),
    backbone=dict(
        type='densebackbones.DenseNetBackbone',
        arch='121',  # mmpretrain's name for DenseNet-121
        out_indices=(4,),
        growth_rate=4, block_config=(1, 2, 1, 1), stem_width=8,  # a small DenseNet-121 layout
    ),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=5, in_channels=9, loss=dict(type='CrossEntropyLoss')),
)
"""


def test_mmpretrain_image_classifier_from_a_config_file(tmp_path):
    path = tmp_path / "densenet121_tiny.py"
    path.write_text(CONFIG)
    cfg = Config.fromfile(str(path))
    model = MODELS.build(cfg.model)
    assert isinstance(model.backbone, DenseNetBackbone)
    assert model.backbone.feature_info[4]["num_chs"] == cfg.model.head.in_channels
    images = torch.randint(0, 256, (2, 3, 64, 64)).float()
    data = dict(inputs=list(images), data_samples=[DataSample().set_gt_label(1), DataSample().set_gt_label(3)])

    model.train()
    losses = model(**model.data_preprocessor(data, True), mode="loss")
    assert set(losses) == {"loss"} and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)

    model.eval()
    predictions = model.val_step(data)
    assert len(predictions) == 2 and predictions[0].pred_score.shape == (5,)

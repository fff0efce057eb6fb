"""OpenMMLab as a client: an mmpretrain ``ImageClassifier`` whose backbone is ``densebackbones.DenseNetBackbone``, from
a config file as users write one (``custom_imports``, the scoped type name, mmpretrain's arch name), trained one step
and run for prediction. mmpretrain 1.2 imports ``mmcv``; the 'dev' extra installs mmcv-lite (pure Python, no compiled
ops), which mmpretrain's classifiers do not need. mmsegmentation cannot be tested that way: importing its models loads
``mmcv.ops`` (compiled; docs/timm_suite.md, "Clients")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mmpretrain
import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from PIL import Image

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


# mmpretrain's own command lines (shipped in its wheel, under mmpretrain/.mim/tools) on a config with our backbone.
TOOLS_CONFIG = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['densebackbones'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='densebackbones.DenseNetBackbone', arch='121', out_indices=(4,),
                  growth_rate=4, block_config=(1, 2, 1, 1), stem_width=8),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=2, in_channels=9, loss=dict(type='CrossEntropyLoss')),
)
data_preprocessor = dict(num_classes=2, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=32), dict(type='PackInputs')]
loader = dict(batch_size=4, num_workers=1, sampler=dict(type='DefaultSampler', shuffle=False),
              dataset=dict(type='CustomDataset', data_root={root!r}, data_prefix='images', pipeline=pipeline))
train_dataloader = val_dataloader = test_dataloader = loader
val_evaluator = test_evaluator = dict(type='Accuracy', topk=(1,))
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
val_cfg = test_cfg = dict()
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1), logger=dict(type='LoggerHook', interval=1))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'), dist_cfg=dict(backend='gloo'))
"""


@pytest.mark.integration
def test_mmpretrains_own_train_and_test_tools(tmp_path):
    tools = Path(mmpretrain.__file__).parent / ".mim" / "tools"
    for label, value in (("a", 40), ("b", 210)):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (32, 32), (value, i * 10, 255 - value)).save(tmp_path / "images" / label / f"{i}.png")
    config = tmp_path / "densenet_tiny.py"
    config.write_text(TOOLS_CONFIG.format(root=str(tmp_path)))
    work = tmp_path / "work"

    def run(tool: str, *args: str, **env: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(tools / tool), str(config), *args]
        return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, timeout=600)

    train = run("train.py", "--work-dir", str(work))
    assert train.returncode == 0, train.stderr[-3000:]
    assert "accuracy/top1" in train.stdout + train.stderr
    # mmpretrain's test.py reads its own checkpoint with torch.load's default, weights_only=True since torch 2.6:
    # refused for every model (its checkpoints hold mmengine objects); docs/mmengine.md gives the switch.
    refused = run("test.py", str(work / "epoch_1.pth"))
    assert refused.returncode != 0 and "weights_only" in refused.stderr
    tested = run("test.py", str(work / "epoch_1.pth"), TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "accuracy/top1" in tested.stdout + tested.stderr

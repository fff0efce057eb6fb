# DeepLabV3 (ASPP head) on Cityscapes with DenseNet-121 at output stride 8, for mmsegmentation 1.x:
#
#     python tools/train.py path/to/densebackbones/configs/mmseg/deeplabv3_densenet121_os8_cityscapes.py  # in mmseg
#
# mmseg's own deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024 with the backbone swapped: DenseNet-121 whose last two
# transitions keep the resolution and whose blocks 3 and 4 are dilated by 2 and 4 (DenseASPP's setting), so the ASPP
# head reads 1/8-resolution maps as with ResNet-50-D8. This file lives outside configs/seg (our own engine's configs,
# checked against its schema) because it is an mmsegmentation config. densebackbones itself does not depend on
# mmseg: its tests load this file with mmengine's Config and build only `model.backbone` through our OpenMMLab
# adapter (DenseNetBackbone), checking its channels and strides; the data preprocessor, ASPPHead, FCNHead, data
# pipeline and schedule are mmseg's and are not built there. No accuracy has been measured with it yet.
#
# Weights: torchvision's ImageNet DenseNet-121 (download
# https://download.pytorch.org/models/densenet121-a639ec97.pth to checkpoints/); they load at every output stride.
custom_imports = dict(imports=["densebackbones"], allow_failed_imports=False)
default_scope = "mmseg"

norm_cfg = dict(type="SyncBN", requires_grad=True)
crop_size = (512, 1024)
data_preprocessor = dict(
    type="SegDataPreProcessor",
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size,
)
model = dict(
    type="EncoderDecoder",
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type="densebackbones.DenseNetBackbone",
        arch="densenet_bc121_k32",
        output_stride=8,  # feature strides 4, 8, 8, 8 for out_indices (1, 2, 3, 4)
        out_indices=(1, 2, 3, 4),  # channels 256, 512, 1024, 1024
        norm_cfg=norm_cfg,
        norm_eval=False,
        init_cfg=dict(type="Pretrained", checkpoint="checkpoints/densenet121-a639ec97.pth"),
    ),
    decode_head=dict(
        type="ASPPHead",
        in_channels=1024,  # level 4: the final dense block after norm5-ReLU, stride 8
        in_index=3,
        channels=512,
        dilations=(1, 12, 24, 36),
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    ),
    auxiliary_head=dict(
        type="FCNHead",
        in_channels=1024,  # level 3: dense block 3, stride 8
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"),
)

# Data: mmseg's configs/_base_/datasets/cityscapes.py.
dataset_type = "CityscapesDataset"
data_root = "data/cityscapes/"
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="RandomResize", scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(2048, 1024), keep_ratio=True),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path="leftImg8bit/train", seg_map_path="gtFine/train"),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path="leftImg8bit/val", seg_map_path="gtFine/val"),
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
test_evaluator = val_evaluator

# Schedule: mmseg's schedule_80k (4 GPUs x 2 images).
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0005))
param_scheduler = [dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=80000, by_epoch=False)]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=80000, val_interval=8000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=8000),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="SegVisualizationHook"),
)
env_cfg = dict(
    cudnn_benchmark=True, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0), dist_cfg=dict(backend="nccl")
)
vis_backends = [dict(type="LocalVisBackend")]
visualizer = dict(type="SegLocalVisualizer", vis_backends=vis_backends, name="visualizer")
log_processor = dict(by_epoch=False)
log_level = "INFO"
load_from = None
resume = False

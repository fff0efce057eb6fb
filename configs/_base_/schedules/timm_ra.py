# timm's RandAugment ("ra") recipe family, as timm documents it (hfdocs hparams.mdx, "ra" row: RMSProp with TF 1.0
# behaviour, EMA, step decay with warm-up, RandAugment) with the values of its documented RA training command
# (hfdocs training_script.mdx, EfficientNet-B2 with RandAugment: --opt rmsproptf --opt-eps .001 --lr .016 for 256
# images, --weight-decay 1e-5, --sched step --decay-epochs 2.4 --decay-rate .97, --model-ema-decay 0.9999,
# --remode pixel --reprob 0.2). timm does not publish the command of its DenseNet ra_in1k weights; their card gives
# bicubic interpolation, 224 px training and 288 px testing at crop 0.95. The epochs are the command's 450,
# the warm-up and the label smoothing timm train.py's defaults (5 epochs, 0.1), which the command keeps.
# Differences, all documented in docs/training.md: the warm-up ramps from 1e-3 x lr (timm: from 1e-6), and timm's
# dropout and drop-path of the EfficientNet command have no counterpart in DenseNet.
data = dict(
    dataset="imagenet",
    root="data/imagenet",
    augment="timm",  # timm.data.create_transform: random-resized crop, flip, RandAugment, random erasing
    auto_augment="rand-m9-mstd0.5-inc1",  # the B2 command's is rand-m9-mstd0.5; "inc1", timm's later RA recipes
    re_prob=0.2,
    re_mode="pixel",
    interpolation="bicubic",
    test_image_size=288,
    test_crop_pct=0.95,
    batch_size=256,
    num_workers=8,
)
optimizer = dict(
    type="RMSpropTF", lr=0.016, base_batch_size=256, alpha=0.9, eps=1e-3, momentum=0.9, weight_decay=1e-5,
    decay_norm_and_bias=False,
)  # fmt: skip
schedule = dict(type="step", epochs=450, decay_epochs=2.4, gamma=0.97, warmup_epochs=5)  # timm train.py's default
train = dict(ema_decay=0.9999, label_smoothing=0.1, checkpoint_interval_steps=1000)  # smoothing: train.py's default

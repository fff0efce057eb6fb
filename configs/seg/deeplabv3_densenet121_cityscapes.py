# DeepLabV3 on DenseNet-121 at output stride 8, Cityscapes, in this library's engine: the setting of
# configs/mmseg/deeplabv3_densenet121_os8_cityscapes.py (mmseg's deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024 with
# the backbone swapped) for users without mmcv. mmseg's schedule_80k and Cityscapes pipeline: SGD lr 0.01 for
# batch 8, momentum 0.9, weight decay 5e-4, poly decay (power 0.9) over 80k steps, 512x1024 crops of images rescaled
# by 0.5-2, flips. Differences: torchvision's DeepLabV3 head (256 channels, no auxiliary FCN head; docs/models/
# dense_aspp.md), no floor under the poly rate (mmseg: 1e-4), and no photometric distortion or crop re-draw.
#
#     torchrun --nproc_per_node 4 tools/train_seg.py configs/seg/deeplabv3_densenet121_cityscapes.py \
#         --data-root data/cityscapes
#
# No accuracy has been measured with it (no GPU, no Cityscapes here).
_base_ = ["../_base_/datasets/cityscapes.py"]

model = dict(type="deeplabv3_densenet121", backbone_kwargs=dict(pretrained=True))
data = dict(crop_size=(512, 1024), brightness_shift=0.0)
optimizer = dict(type="SGD", lr=0.01, base_batch_size=8, momentum=0.9, nesterov=False, weight_decay=5e-4)
schedule = dict(type="poly", power=0.9, max_iters=80000)
train = dict(log_interval=50, eval_interval=8)

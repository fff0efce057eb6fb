# densenet_bc121_k32 on ImageNet-1k with timm's RandAugment recipe (configs/_base_/schedules/timm_ra.py); the paper's
# recipe stays in densenet_bc121_k32_imagenet.py. timm's densenet121.ra_in1k: 75.574 % top-1 at 224 px, 76.486 % at
# 288 px (results/results-imagenet.csv); no run of this config has been measured here (no GPU, no ImageNet).
_base_ = ["../_base_/schedules/timm_ra.py"]

model = dict(type="densenet_bc121_k32")

# Pelee on VOC 07+12, tested on VOC 2007 (paper: 70.9 mAP), with the official train_voc.py settings: 304 px, batch
# 32, min-IoU crops and flips only (the script has no photometric distortion and no zoom-out).
# The official run starts from ImageNet PeleeNet weights: add
#   model.backbone_kwargs='dict(pretrained=True, pretrained_cfg_overlay=dict(file="peleenet_in1k.safetensors"))'
_base_ = ["../_base_/datasets/voc0712.py", "../_base_/schedules/pelee_voc.py"]

data = dict(image_size=304, batch_size=32, photometric=False, max_expand=1.0)
model = dict(type="pelee")

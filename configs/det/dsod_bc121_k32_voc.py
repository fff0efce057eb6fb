# The DSOD head on DenseNet-121 features (strides 16 and 32), VOC 07+12. For ImageNet weights add
# model.backbone_kwargs='dict(pretrained=True)' or a local file through pretrained_cfg_overlay.
_base_ = ["../_base_/datasets/voc0712.py", "../_base_/schedules/dsod_voc.py"]

model = dict(type="dsod_bc121_k32")

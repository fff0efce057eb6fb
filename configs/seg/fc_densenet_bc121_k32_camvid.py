# The FC-DenseNet103 up path on ImageNet DenseNet-121 features. For ImageNet weights add
# model.encoder_kwargs='dict(pretrained=True)' (downloads torchvision's) or a local file through
# pretrained_cfg_overlay.
_base_ = ["../_base_/datasets/camvid.py", "../_base_/schedules/fc_densenet_rmsprop.py"]

model = dict(type="fc_densenet_bc121_k32")

# CondenseNet-74 (C = G = 8) on ImageNet-1k, the recipe of condensenet74_c4_g4_imagenet.py.
# Paper: 29.0 % top-1 error, 274M FLOPs converted (Table 5).
_base_ = ["./condensenet74_c4_g4_imagenet.py"]

model = dict(type="condensenet74_c8_g8")

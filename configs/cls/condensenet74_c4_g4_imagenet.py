# CondenseNet-74 (C = G = 4) on ImageNet-1k, the official recipe: 120 epochs, batch 256, lr 0.1 with a per-iteration
# cosine, SGD Nesterov 0.9, weight decay 1e-4, random-resized crop and flip; group lasso 1e-5 as docs/reference.md
# gives the ImageNet setting (the README command leaves main.py's default 0).
# Paper: 26.2 % top-1 error, 529M FLOPs converted (Table 5).
_base_ = ["../_base_/datasets/imagenet.py"]

data = dict(augment="imagenet_crop_flip")
model = dict(type="condensenet74_c4_g4", group_lasso_lambda=1e-5)
optimizer = dict(type="SGD", lr=0.1, base_batch_size=256, momentum=0.9, nesterov=True, weight_decay=1e-4)
schedule = dict(type="cosine", epochs=120)

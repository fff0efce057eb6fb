# PeleeNet on ImageNet-1k, the official recipe (README and main.py): 120 epochs, batch 512, lr 0.18 with a
# per-iteration cosine schedule, SGD momentum 0.9 (no Nesterov), weight decay 1e-4, random-resized crop and flip.
# Paper: 72.6 top-1 (the released checkpoint 72.08).
_base_ = ["../_base_/datasets/imagenet.py"]

data = dict(augment="imagenet_crop_flip", batch_size=512)
model = dict(type="peleenet")
optimizer = dict(type="SGD", lr=0.18, base_batch_size=512, momentum=0.9, nesterov=False, weight_decay=1e-4)
schedule = dict(type="cosine", epochs=120)

# ImageNet as an ImageFolder tree: data.root/train/<wnid>/*.JPEG and data.root/val/<wnid>/*.JPEG.
# fb.resnet.torch augmentation (random-resized crop, colour jitter 0.4, PCA lighting, flip); eval 256 -> 224.
data = dict(dataset="imagenet", root="data/imagenet", augment="imagenet", batch_size=256, num_workers=8)
# Epochs are long (DenseNet-121: ~12 min on one H200, hours on smaller GPUs): last.pth every 1000 optimiser steps
# (1/5 of an epoch at batch 256; ~0.5 s each for DenseNet-121, docs/training.md), so a kill loses at most that.
train = dict(checkpoint_interval_steps=1000)

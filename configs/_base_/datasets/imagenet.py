# ImageNet as an ImageFolder tree: data.root/train/<wnid>/*.JPEG and data.root/val/<wnid>/*.JPEG.
# fb.resnet.torch augmentation (random-resized crop, colour jitter 0.4, PCA lighting, flip); eval 256 -> 224.
data = dict(dataset="imagenet", root="data/imagenet", augment="imagenet", batch_size=256, num_workers=8)

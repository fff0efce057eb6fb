# Fine-tune DenseNet-121 from torchvision's ImageNet weights on your own image folders:
#   DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg (without val/, data.val_fraction of every class is held out).
# python tools/train_cls.py configs/cls/finetune_folder.py --data-root DIR --pretrained densenet121.pth  (offline)
# Without --pretrained, model.pretrained=True downloads torchvision's weights (densenet_bc121_k32.tv_in1k).
# The classes are train's folders, sorted (data.classes is filled in and travels with the run); the 1000-way
# ImageNet classifier is replaced by a fresh one of that size. top-5 is reported only for more than five classes.
#
# Recipe: PyTorch's "Transfer learning for computer vision" tutorial (torchvision docs, fine-tuning the whole
# network): SGD momentum 0.9, lr 0.001 for batches of 4 (scaled linearly: 0.008 for 32), lr / 10 every 7 epochs,
# 25 epochs; random-resized crop and flip for training, resize and centre crop for evaluation. Inputs are cropped
# at the weights' input size (224) and normalised with the weights' own mean and std (their pretrained config).
model = dict(type="densenet_bc121_k32", pretrained=True)
data = dict(dataset="folder", augment="imagenet_crop_flip", batch_size=32, num_workers=4, val_fraction=0.1)
optimizer = dict(type="SGD", lr=0.001, base_batch_size=4, momentum=0.9, nesterov=False, weight_decay=0.0)
schedule = dict(type="multistep", epochs=25, milestones=(7, 14, 21), gamma=0.1)
train = dict(log_interval=10)

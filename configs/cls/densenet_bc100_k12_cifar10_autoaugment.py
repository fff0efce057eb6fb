# densenet_bc100_k12_cifar on CIFAR-10 with AutoAugment and Cutout as the AutoAugment paper trains on CIFAR
# (Cubuk et al., CVPR 2019: the standard pad-crop-flip, then the learned CIFAR-10 policy, then a 16x16
# Cutout; torchvision's AutoAugmentPolicy.CIFAR10 is that policy). The DenseNet paper's optimiser and 300-epoch
# schedule are kept (densenet_bc100_k12_cifar10.py without AutoAugment beside it). Not measured here (no GPU).
_base_ = ["./densenet_bc100_k12_cifar10.py"]

data = dict(auto_augment="cifar10", cutout=16)

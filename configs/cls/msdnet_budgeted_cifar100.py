# MSDNet for budgeted batch classification on CIFAR-100 (5 blocks, linearly growing steps): the CIFAR recipe of
# msdnet_anytime_cifar100.py, with 5000 held-out training images for the exit thresholds.
_base_ = ["../_base_/datasets/cifar100.py", "../_base_/schedules/cifar_300e.py"]

data = dict(holdout=5000)
model = dict(type="msdnet_budgeted_cifar", output="all")  # every exit: the loss sums their cross-entropies
optimizer = dict(nesterov=False)  # the port: SGD momentum 0.9 without Nesterov

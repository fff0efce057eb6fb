# MSDNet on ImageNet-1k (Sec. 5): 90 epochs, batch 256, lr 0.1 divided by 10 at epochs 30 and 60, SGD momentum 0.9,
# weight decay 1e-4; 50,000 training images held out for the budgeted thresholds (tools/eval_msdnet.py).
_base_ = ["../_base_/datasets/imagenet.py", "../_base_/schedules/imagenet_90e.py"]

data = dict(holdout=50_000)
model = dict(type="msdnet_imagenet", output="all")  # every exit: the loss sums their cross-entropies
optimizer = dict(nesterov=False)  # the port: SGD momentum 0.9 without Nesterov

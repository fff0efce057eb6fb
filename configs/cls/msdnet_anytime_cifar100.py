# MSDNet for anytime prediction on CIFAR-100 (Sec. 5, Appendix): 300 epochs, batch 64, SGD momentum 0.9,
# weight decay 1e-4, lr 0.1 divided by 10 at 50 % and 75 % of training; the loss sums the 7 exits' cross-entropies.
# 5000 training images are held out for the budgeted thresholds (tools/eval_msdnet.py --holdout 5000).
_base_ = ["../_base_/datasets/cifar100.py", "../_base_/schedules/cifar_300e.py"]

data = dict(holdout=5000)
model = dict(type="msdnet_anytime_cifar", output="all")  # every exit: the loss sums their cross-entropies
optimizer = dict(nesterov=False)  # the port: SGD momentum 0.9 without Nesterov

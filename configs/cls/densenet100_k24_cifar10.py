# densenet100_k24_cifar on C10+ (Table 2), 300 epochs, batch 64.
_base_ = ["../_base_/datasets/cifar10.py", "../_base_/schedules/cifar_300e.py"]

model = dict(type="densenet100_k24_cifar")

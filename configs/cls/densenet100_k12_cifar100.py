# densenet100_k12_cifar on C100+ (Table 2), 300 epochs, batch 64.
_base_ = ["../_base_/datasets/cifar100.py", "../_base_/schedules/cifar_300e.py"]

model = dict(type="densenet100_k12_cifar")

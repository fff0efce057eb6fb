# densenet40_k12_cifar on C100 without augmentation (Table 2).
_base_ = ["../_base_/datasets/cifar100.py", "../_base_/schedules/cifar_300e.py"]

model = dict(type="densenet40_k12_cifar", proj_drop_rate=0.2)  # Sec. 4.2: dropout 0.2 without augmentation
data = dict(augment="none")

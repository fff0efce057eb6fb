# densenet_bc100_k12_cifar on C10 without augmentation (Table 2).
_base_ = ["../_base_/datasets/cifar10.py", "../_base_/schedules/cifar_300e.py"]

model = dict(type="densenet_bc100_k12_cifar", proj_drop_rate=0.2)  # Sec. 4.2: dropout 0.2 without augmentation
data = dict(augment="none")

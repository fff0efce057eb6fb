# densenet100_k24_cifar on SVHN (Table 2), 40 epochs, no augmentation.
_base_ = ["../_base_/datasets/svhn.py", "../_base_/schedules/svhn_40e.py"]

model = dict(type="densenet100_k24_cifar", proj_drop_rate=0.2)  # Sec. 4.2: dropout 0.2 without augmentation

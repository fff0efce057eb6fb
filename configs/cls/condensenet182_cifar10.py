# CondenseNet-182 on CIFAR-10 (official README: 3.76 % error, 513M FLOPs converted, "trained 600 epochs"): the CIFAR
# recipe of condensenet86_cifar10.py over 600 epochs.
_base_ = ["../_base_/datasets/cifar10.py"]

model = dict(type="condensenet182_cifar")
optimizer = dict(type="SGD", lr=0.1, base_batch_size=64, momentum=0.9, nesterov=True, weight_decay=1e-4)
schedule = dict(type="cosine", epochs=600)

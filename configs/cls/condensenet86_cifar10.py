# CondenseNet-86 on CIFAR-10 (official script.sh): 300 epochs, batch 64, lr 0.1 with a per-iteration cosine, SGD
# Nesterov 0.9, weight decay 1e-4, C = G = 4, no group lasso. Paper: 5.0 % error (Table 3), 65.8M FLOPs converted.
_base_ = ["../_base_/datasets/cifar10.py"]

model = dict(type="condensenet86_cifar")
optimizer = dict(type="SGD", lr=0.1, base_batch_size=64, momentum=0.9, nesterov=True, weight_decay=1e-4)
schedule = dict(type="cosine", epochs=300)

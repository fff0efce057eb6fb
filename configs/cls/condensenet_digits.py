# CPU demo: a small CIFAR-style CondenseNet (C = G = 4) on scikit-learn's digits that trains, condenses during its
# first half (drops at 1/6, 1/3 and 1/2 of the iterations) and converts:
#   python tools/train_cls.py configs/cls/condensenet_digits.py
#   python tools/convert_condensenet.py configs/cls/condensenet_digits.py work_dirs/condensenet_digits/last.pth --eval
_base_ = ["../_base_/datasets/digits.py"]

model = dict(type="condensenet86_cifar", block_config=(4, 4), growth_rate=(8, 16))
optimizer = dict(type="SGD", lr=0.1, base_batch_size=64, momentum=0.9, nesterov=True, weight_decay=1e-4)
schedule = dict(type="cosine", epochs=20)
train = dict(log_interval=10)
work_dir = "work_dirs/condensenet_digits"

# The main job (`make train`): DenseNet-BC (L=100, k=12) on scikit-learn's digits, a few CPU minutes.
_base_ = ["../_base_/datasets/digits.py"]

model = dict(type="densenet_bc100_k12_cifar")  # classes and channels (10, 1) come from the data set
optimizer = dict(type="SGD", lr=0.1, base_batch_size=64, momentum=0.9, nesterov=True, weight_decay=1e-4)
schedule = dict(type="cosine", epochs=15)
train = dict(log_interval=10)
work_dir = "work_dirs/densenet_bc_digits"

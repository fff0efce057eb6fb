# CIFAR-10 python batches under data.root (cifar-10-batches-py/); "+" augmentation (Sec. 4.1).
data = dict(dataset="cifar10", root="data/cifar10", augment="plus", batch_size=64, num_workers=4)

# CIFAR-100 python batches under data.root (cifar-100-python/); "+" augmentation (Sec. 4.1).
data = dict(dataset="cifar100", root="data/cifar100", augment="plus", batch_size=64, num_workers=4)

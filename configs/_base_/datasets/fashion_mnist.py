# Fashion-MNIST IDX files (Debian's dataset-fashion-mnist, or torchvision's FashionMNIST/raw layout).
data = dict(dataset="fashion_mnist", root="data/fashion_mnist", augment="plus", batch_size=64, num_workers=4)

# Fashion-MNIST IDX files: the default root is where Debian's dataset-fashion-mnist package puts them
# (apt-get install dataset-fashion-mnist); torchvision's FashionMNIST/raw layout works too.
data = dict(
    dataset="fashion_mnist", root="/usr/share/datasets/fashion-mnist", augment="plus", batch_size=64, num_workers=4
)

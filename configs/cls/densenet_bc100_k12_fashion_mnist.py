# DenseNet-BC (L=100, k=12) on Fashion-MNIST with the CIFAR "+" recipe (28 px, 1 channel).
_base_ = ["../_base_/datasets/fashion_mnist.py", "../_base_/schedules/cifar_300e.py"]

model = dict(type="densenet_bc100_k12_cifar")

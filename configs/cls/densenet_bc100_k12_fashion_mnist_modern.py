# DenseNet-BC (L=100, k=12) on Fashion-MNIST with a modern recipe beside densenet_bc100_k12_fashion_mnist.py (the
# paper's): RandAugment, random erasing, mixup and CutMix with label smoothing, repeated augmentation, EMA, AdamW
# with cosine decay after a warm-up, no weight decay on norms and biases. docs/benchmarks.md compares the two on
# the same model and epochs (issue 36).
_base_ = ["./densenet_bc100_k12_fashion_mnist.py"]

data = dict(
    auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25, mixup_alpha=0.2, cutmix_alpha=1.0, mixup_switch_prob=0.5
)  # fmt: skip
optimizer = dict(type="AdamW", lr=2e-3, base_batch_size=64, weight_decay=0.05, decay_norm_and_bias=False)
schedule = dict(type="cosine", warmup_epochs=5, milestones=())
train = dict(label_smoothing=0.1, ema_decay=0.999, repeated_aug=1)

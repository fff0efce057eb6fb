# CPU demo: a small CIFAR-style MSDNet (3 scales, 3 exits) on scikit-learn's digits, resized to 24 px so that the
# coarsest scale (6 px) feeds the exits; the loss sums the exits' cross-entropies and eval.csv has every exit's
# top-1. Then anytime and budgeted evaluation:
#   python tools/train_cls.py configs/cls/msdnet_digits.py
#   python tools/eval_msdnet.py configs/cls/msdnet_digits.py work_dirs/msdnet_digits/last.pth --holdout 300
_base_ = ["../_base_/datasets/digits.py"]

data = dict(image_size=24)
model = dict(
    type="msdnet_anytime_cifar",
    output="all",  # every exit (the registered model is final-only by default)
    num_blocks=3,
    base=2,
    step=2,
    channels=8,
    growth_rate=4,
)
optimizer = dict(type="SGD", lr=0.1, base_batch_size=64, momentum=0.9, nesterov=True, weight_decay=1e-4)
schedule = dict(type="cosine", epochs=12)
train = dict(log_interval=10)
work_dir = "work_dirs/msdnet_digits"

# Pelee on COCO 2017 with its COCO default boxes (paper: 22.4 AP on test-dev), the official train_coco.py settings:
# 304 px, SSD augmentation (photometric distortion, zoom-out up to 4x, min-IoU crops, flips), SGD momentum 0.9,
# weight decay 5e-4, lr 0.01 for a batch of 128 (32 x 4 accumulated), / 10 at 70k and 90k of 100k iterations.
# Start from ImageNet PeleeNet weights as configs/det/pelee_voc.py says.
_base_ = ["../_base_/datasets/coco.py", "../_base_/schedules/pelee_voc.py"]

data = dict(image_size=304, batch_size=128)
model = dict(type="pelee")
optimizer = dict(lr=0.01, base_batch_size=128)
schedule = dict(max_iters=100_000, milestones=(70_000, 90_000))
train = dict(accum_steps=4)

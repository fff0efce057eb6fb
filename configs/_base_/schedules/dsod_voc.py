# DSOD (Sec. 4.1): SGD momentum 0.9, weight decay 5e-4, lr 0.1 for an effective batch of 128 images (gradient
# accumulation), divided by 10 at 20k, 40k, 60k and 80k of 100k iterations.
optimizer = dict(type="SGD", lr=0.1, base_batch_size=128, momentum=0.9, nesterov=False, weight_decay=5e-4)
schedule = dict(type="multistep", max_iters=100_000, milestones=(20_000, 40_000, 60_000, 80_000), gamma=0.1)
# 128 images per step: e.g. 8 GPUs x 16 images, or 1 GPU x 32 images x accum_steps 4. Small per-GPU batches
# want train.sync_bn=True (the paper's models train from scratch with BN).
train = dict(accum_steps=4, log_interval=20, eval_interval=10)

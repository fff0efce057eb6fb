# Pelee on VOC 07+12 (official train_voc.py): SGD momentum 0.9, weight decay 5e-4, lr 0.005 for a batch of 32,
# divided by 10 at 80k and 100k iterations, 120k iterations in all.
optimizer = dict(type="SGD", lr=0.005, base_batch_size=32, momentum=0.9, nesterov=False, weight_decay=5e-4)
schedule = dict(type="multistep", max_iters=120_000, milestones=(80_000, 100_000), gamma=0.1)
train = dict(accum_steps=1, log_interval=20, eval_interval=10)

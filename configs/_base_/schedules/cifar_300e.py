# Sec. 4.2: SGD, Nesterov 0.9, dampening 0, weight decay 1e-4, batch 64, 300 epochs, lr 0.1 / 10 at 50% and 75%.
# lr is per 64 images and scales linearly with data.batch_size.
optimizer = dict(type="SGD", lr=0.1, base_batch_size=64, momentum=0.9, nesterov=True, weight_decay=1e-4)
schedule = dict(type="multistep", epochs=300, milestones=(150, 225), gamma=0.1)

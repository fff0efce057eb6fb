# Sec. 4.2 (fb.resnet.torch): 90 epochs, batch 256, lr 0.1 / 10 every 30 epochs, SGD Nesterov 0.9, wd 1e-4.
# lr is per 256 images and scales linearly with data.batch_size (e.g. 1024 images -> lr 0.4).
optimizer = dict(type="SGD", lr=0.1, base_batch_size=256, momentum=0.9, nesterov=True, weight_decay=1e-4)
schedule = dict(type="multistep", epochs=90, milestones=(30, 60), gamma=0.1)

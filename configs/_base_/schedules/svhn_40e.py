# Sec. 4.2: as CIFAR but 40 epochs, lr / 10 at epochs 20 and 30.
# lr is per 64 images and scales linearly with data.batch_size.
optimizer = dict(type="SGD", lr=0.1, base_batch_size=64, momentum=0.9, nesterov=True, weight_decay=1e-4)
schedule = dict(type="multistep", epochs=40, milestones=(20, 30), gamma=0.1)

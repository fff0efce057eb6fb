# DenseNet-cosine (official models): per-iteration lr = 0.5 lr0 (1 + cos(pi t / T)), no warm-up, 90 epochs.
optimizer = dict(type="SGD", lr=0.1, base_batch_size=256, momentum=0.9, nesterov=True, weight_decay=1e-4)
schedule = dict(type="cosine", epochs=90)

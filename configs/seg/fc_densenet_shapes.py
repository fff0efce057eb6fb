# A small FC-DenseNet (3 pools, k=8) on the generated shapes data set: the CPU demo of train_seg.
_base_ = ["../_base_/datasets/shapes.py", "../_base_/schedules/fc_densenet_rmsprop.py"]

model = dict(type="fc_densenet56", growth_rate=8, layers_per_block=(2, 2, 2, 2, 2, 2, 2))
optimizer = dict(lr=3e-3, base_batch_size=8)
schedule = dict(epochs=12)
train = dict(early_stop_patience=None, log_interval=4)

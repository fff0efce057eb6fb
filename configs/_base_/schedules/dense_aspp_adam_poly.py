# DenseASPP (Yang et al., CVPR 2018, Sec. 4): Adam, initial learning rate 0.0003 for batch 8, weight decay 1e-5
# (Adam's L2 form), poly decay with power 0.9, 80 epochs on Cityscapes' fine training set.
optimizer = dict(type="Adam", lr=3e-4, base_batch_size=8, weight_decay=1e-5)
schedule = dict(type="poly", power=0.9, epochs=80)
train = dict(log_interval=20)

# densenet_bc169_k32 on ImageNet-1k (Table 3 recipe): 90 epochs, global batch 256, lr 0.1 / 10 every 30 epochs.
_base_ = ["../_base_/datasets/imagenet.py", "../_base_/schedules/imagenet_90e.py"]

model = dict(type="densenet_bc169_k32")

# DenseNet-264 (k=48) with the cosine schedule (official models, 20.4 top-1 error).
_base_ = ["../_base_/datasets/imagenet.py", "../_base_/schedules/imagenet_cosine_90e.py"]

model = dict(type="densenet_bc264_k48")

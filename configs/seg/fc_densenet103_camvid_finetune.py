# FC-DenseNet103 on CamVid, second stage: full 360x480 images, batch 1, lr 1e-4; start it with
# --pretrained work_dirs/fc_densenet103_camvid/best.pth (Sec. 4.1). Paper: 66.9 mIoU, 91.5 global accuracy.
_base_ = ["fc_densenet103_camvid.py"]

data = dict(crop_size=None, batch_size=1)
optimizer = dict(lr=1e-4, base_batch_size=1)

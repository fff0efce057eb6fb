# FC-DenseNet103 on Cityscapes. Jegou et al. (2017) train on CamVid and Gatech only, so no published recipe or
# number exists for Cityscapes: this is FC-DenseNet's optimiser (RMSprop, lr 1e-3 per 3 images, decay 0.995 per
# epoch, weight decay 1e-4; Sec. 4.1) with DenseASPP's Cityscapes crops and augmentation and its 80 epochs.
# Evaluated in 1024x1024 windows with stride 768: on a 1024x2048 image the windows peak at 4,126 MB against 7,945 MB
# for the whole image (docs/benchmarks.md).
#
#     python tools/train_seg.py configs/seg/fc_densenet103_cityscapes.py --data-root data/cityscapes
_base_ = ["../_base_/datasets/cityscapes.py", "../_base_/schedules/fc_densenet_rmsprop.py"]

model = dict(type="fc_densenet103")
data = dict(batch_size=3, test_mode="slide", test_crop=1024, test_stride=768)
schedule = dict(epochs=80)
train = dict(early_stop_patience=None)

# DenseASPP-161 on Cityscapes with the paper's recipe (Yang et al., CVPR 2018, Sec. 4): ImageNet-initialised
# DenseNet-161 (torchvision's weights, downloaded once), Adam with poly decay for 80 epochs, 512x512 crops of images
# rescaled by 0.5-2, flips and brightness shifts, batch 8; whole-image evaluation at 1024x2048.
#
#     torchrun --nproc_per_node 4 tools/train_seg.py configs/seg/dense_aspp161_cityscapes.py --data-root data/cityscapes
#
# The official DenseASPP-161 reaches 79.9 mIoU on Cityscapes val single-scale and 80.6 multi-scale (its README);
# test_scales and test_flip under data set multi-scale testing (the paper does not state its scales). No run of this
# config has been measured here (no GPU, no Cityscapes).
_base_ = ["../_base_/datasets/cityscapes.py", "../_base_/schedules/dense_aspp_adam_poly.py"]

model = dict(type="dense_aspp161", backbone_kwargs=dict(pretrained=True))

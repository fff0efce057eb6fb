# Cityscapes (fine annotations): 2975 train / 500 val images at 1024x2048, 19 classes, 255 ignored.
# Layout as released: root/leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png and
# root/gtFine/{train,val,test}/<city>/*_gtFine_labelIds.png (label ids mapped through cityscapesscripts' table).
# DenseASPP's training augmentation (Yang et al., CVPR 2018, Sec. 4): random horizontal flip, random scale in
# [0.5, 2], random brightness in [-10, 10], random 512x512 crops, batch 8; evaluation on the whole 1024x2048 image.
data = dict(
    dataset="cityscapes",
    root="data/cityscapes",
    crop_size=512,
    scale_range=(0.5, 2.0),
    brightness_shift=10.0,
    hflip=True,
    batch_size=8,
    eval_batch_size=1,
)

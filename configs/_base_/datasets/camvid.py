# CamVid (SegNet release): 367 train / 101 val / 233 test images at 360x480, 11 classes + void (index 11).
# Layout: root/{train,val,test}/*.png and root/{train,val,test}annot/*.png (class indices).
# FC-DenseNet recipe (Jegou et al. 2017, Sec. 4.1): 224x224 random crops, batch 3, horizontal flip.
data = dict(dataset="camvid", root="data/CamVid", crop_size=224, hflip=True, batch_size=3, eval_batch_size=1)

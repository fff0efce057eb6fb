# Pascal VOC in VOCdevkit layout: train on 2007+2012 trainval, test on 2007 test (difficult objects ignored in
# the metrics, left out of the training targets); SSD augmentation, 300x300.
data = dict(dataset="voc", root="data/VOCdevkit", image_size=300, batch_size=128, eval_batch_size=8)

# COCO 2017: data.root/annotations/instances_{train,val}2017.json and data.root/{train,val}2017/ images.
data = dict(dataset="coco", root="data/coco", image_size=300, batch_size=128, eval_batch_size=8)

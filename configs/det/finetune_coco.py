# Detection on your own COCO-format annotations: the DSOD head on DenseNet-121, whose backbone starts from
# torchvision's ImageNet weights. Category names (and their order) come from the json's categories.
#   DIR/annotations/instances_train.json, DIR/train/<images>, DIR/annotations/instances_val.json, DIR/val/<images>
#   (other folder names: data.train_split=NAME data.val_split=NAME read instances_NAME.json and NAME/)
# python tools/train_det.py configs/det/finetune_coco.py --data-root DIR --pretrained densenet121.pth  (offline:
# a classification checkpoint initialises the backbone; a detector checkpoint loads whole)
# Without --pretrained, model.backbone_kwargs.pretrained=True downloads torchvision's weights.
#
# Recipe: SSD's fine-tuning from an ImageNet backbone (Liu et al. 2016, Sec. 3 and 3.1): 300 px inputs, SSD's
# augmentation, SGD momentum 0.9, weight decay 5e-4, lr 1e-3 for batches of 32, / 10 twice (VOC07+12: 40k, 50k of
# 60k iterations, about epochs 80 and 100 of 120); COCO's default-box sizes.
model = dict(type="dsod_bc121_k32", backbone_kwargs=dict(pretrained=True))
data = dict(
    dataset="coco",
    train_split="train",
    val_split="val",
    image_size=300,
    batch_size=32,
    eval_batch_size=8,
    num_workers=4,
)
optimizer = dict(type="SGD", lr=0.001, base_batch_size=32, momentum=0.9, nesterov=False, weight_decay=5e-4)
schedule = dict(type="multistep", epochs=120, milestones=(80, 100), gamma=0.1)
train = dict(accum_steps=1, log_interval=20, eval_interval=5)

# Multi-label fine-tuning of DenseNet-121 from torchvision's ImageNet weights, as CheXNet (Rajpurkar et al. 2017)
# fine-tuned it on ChestX-ray14's 14 findings:
#   DIR/train.csv, DIR/val.csv, DIR/images/<file>; each CSV has an image-file column and a column of
#   '|'-separated label names (ChestX-ray14's Data_Entry_2017.csv: 'Image Index', 'Finding Labels').
# python tools/train_cls.py configs/cls/finetune_multilabel_csv.py --data-root DIR --pretrained densenet121.pth
# The labels are every name train.csv uses, sorted (a name only val.csv has is an error). Sigmoid outputs,
# BCE-with-logits (data.pos_weight='balanced' weights each class's positives by negatives / positives); eval.csv
# holds each class's AUROC and AP, their means auroc (selects best.pth) and mAP. Grey images are read as RGB.
#
# Recipe: CheXNet (Sec. 3.1): 224 px inputs normalised with ImageNet's mean and std, random horizontal flips, batch
# 16. CheXNet trains with Adam (lr 0.001, divided by 10 on a validation-loss plateau); the engine has SGD and
# RMSprop, so this uses SGD momentum 0.9, lr 0.001 per 16 images, / 10 at epochs 10 and 15 of 20.
model = dict(type="densenet_bc121_k32", pretrained=True)
data = dict(
    dataset="multilabel_csv",
    augment="resize_flip",  # CheXNet: resize to 224 and flip (no crops)
    batch_size=16,
    num_workers=4,
    image_column="Image Index",
    label_column="Finding Labels",
    label_separator="|",
    pos_weight=None,
)
optimizer = dict(type="SGD", lr=0.001, base_batch_size=16, momentum=0.9, nesterov=False, weight_decay=1e-4)
schedule = dict(type="multistep", epochs=20, milestones=(10, 15), gamma=0.1)
train = dict(log_interval=20)

# Semantic segmentation on your own image/mask folders: the FC-DenseNet decoder (FC-DenseNet103's up path) on
# DenseNet-121, whose encoder starts from torchvision's ImageNet weights:
#   DIR/train/images/<name>.<jpg|png|...>, DIR/train/masks/<name>.png, the same under DIR/val/, and DIR/classes.txt
#   (one class name per line; line 1 is index 0). Masks are index PNGs (mode L or P); 255 is ignored.
# python tools/train_seg.py configs/seg/finetune_folder.py --data-root DIR --pretrained densenet121.pth  (offline:
# a classification checkpoint initialises the encoder; a segmentation checkpoint loads whole)
# Without --pretrained, model.encoder_kwargs.pretrained=True downloads torchvision's weights.
#
# Recipe: mmsegmentation's fine-tuning schedule for ImageNet-initialised backbones (configs/_base_/schedules/
# schedule_40k.py: SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 16) with its ADE20K pipeline's 512 px
# random crops and flips; cosine decay replaces mmsegmentation's poly(0.9), which the engine does not have. Inputs
# are normalised with the encoder weights' own mean and std. mIoU (and per-class IoU, by name) selects best.pth.
model = dict(type="fc_densenet_bc121_k32", encoder_kwargs=dict(pretrained=True))
data = dict(dataset="folder", crop_size=512, hflip=True, batch_size=8, eval_batch_size=1, num_workers=4)
optimizer = dict(type="SGD", lr=0.01, base_batch_size=16, momentum=0.9, nesterov=False, weight_decay=5e-4)
schedule = dict(type="cosine", epochs=50)
train = dict(log_interval=20)

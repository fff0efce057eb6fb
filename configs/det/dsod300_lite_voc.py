# DSOD300-lite on VOC 07+12 (official release: 76.7 mAP, 10.4M parameters; layers per block reconstructed,
# see densebackbones/models/dsod.py).
_base_ = ["../_base_/datasets/voc0712.py", "../_base_/schedules/dsod_voc.py"]

model = dict(type="dsod300_lite")

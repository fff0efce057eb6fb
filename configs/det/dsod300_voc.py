# DSOD300 on VOC 07+12, tested on VOC 2007 (paper: 77.7 mAP).
_base_ = ["../_base_/datasets/voc0712.py", "../_base_/schedules/dsod_voc.py"]

model = dict(type="dsod300")

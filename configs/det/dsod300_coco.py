# DSOD300 on COCO 2017 with COCO's default-box sizes (paper: 29.3 AP on test-dev).
_base_ = ["../_base_/datasets/coco.py", "../_base_/schedules/dsod_voc.py"]

model = dict(type="dsod300")
schedule = dict(max_iters=320_000, milestones=(240_000, 280_000))

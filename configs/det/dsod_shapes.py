# A small DSOD on the generated shapes set (squares and discs, COCO json, written on first use): the CPU demo.
_base_ = ["../_base_/datasets/shapes_det.py", "../_base_/schedules/dsod_voc.py"]

data = dict(image_size=96)
model = dict(
    type="dsod300",
    backbone_kwargs=dict(growth_rate=8, block_config=(1, 2, 2, 2), stem_chs=(16, 16, 32)),
    head_kwargs=dict(second_half=32, extra_halves=(32, 16, 16, 16)),
)
# lr per 16 images; 0.05 diverged on this tiny from-scratch model (DSOD's 0.1 per 128 is 0.0125 per 16)
optimizer = dict(lr=0.01, base_batch_size=16)
schedule = dict(max_iters=200, milestones=(150,))
train = dict(accum_steps=1, clip_grad=10.0, log_interval=10, eval_interval=5)

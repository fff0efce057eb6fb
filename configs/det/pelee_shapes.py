# A small Pelee on the generated shapes set (squares and discs, COCO json, written on first use): the CPU demo.
# The head reads the tiny PeleeNet's strides 8 and 16, so that 160 px inputs reach the 1x1 map (at PeleeNet's
# strides 16 and 32 that takes 288 px).
_base_ = ["../_base_/datasets/shapes_det.py", "../_base_/schedules/pelee_voc.py"]

data = dict(image_size=160)
model = dict(
    type="pelee",
    backbone_indices=(2, 3),
    backbone_kwargs=dict(growth_rate=16, block_config=(1, 1, 2, 2), stem_width=16),
    head_kwargs=dict(extra_chs=((64, 64), (32, 64), (32, 64)), res_chs=64),
)
optimizer = dict(lr=0.02, base_batch_size=16)
schedule = dict(max_iters=120, milestones=(90,))
train = dict(accum_steps=1, clip_grad=10.0, log_interval=10, eval_interval=5)

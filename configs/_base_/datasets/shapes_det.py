# The generated detection shapes set (squares and discs on noise, COCO json), written to data.root on first use:
# 64 training and 16 validation images, batches of 16. The demos set data.image_size for their detector.
data = dict(
    dataset="shapes",
    root="data/shapes_det",
    batch_size=16,
    eval_batch_size=16,
    num_workers=0,
    shapes_train=64,
    shapes_val=16,
)

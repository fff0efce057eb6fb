# The generated shapes data set (background, squares, discs; void outlines) in the CamVid layout, 64x80 px.
# Written to data.root on first use.
data = dict(dataset="shapes", root="data/shapes", crop_size=48, batch_size=8, eval_batch_size=8, num_workers=0)

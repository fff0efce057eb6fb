# scikit-learn's 8x8 handwritten digits (1437 train / 360 test, 1 channel): ships with scikit-learn, no download.
data = dict(dataset="digits", augment="shift", batch_size=64, num_workers=0)

# SVHN cropped digits (train_32x32.mat / test_32x32.mat); the paper uses no augmentation and dropout 0.2.
# (The paper also adds the 531k "extra" images; this config trains on train_32x32.mat only.)
data = dict(dataset="svhn", root="data/svhn", augment="none", batch_size=64, num_workers=4)

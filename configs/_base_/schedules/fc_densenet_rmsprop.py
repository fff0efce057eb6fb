# FC-DenseNet (Sec. 4.1): RMSprop, lr 1e-3 (per 3 images) decayed by 0.995 every epoch, weight decay 1e-4;
# early stopping on validation mIoU (patience 100 epochs).
optimizer = dict(type="RMSprop", lr=1e-3, base_batch_size=3, alpha=0.9, eps=1e-8, momentum=0.0, weight_decay=1e-4)
schedule = dict(type="exponential", gamma=0.995, epochs=1000)
train = dict(early_stop_patience=100, log_interval=20)

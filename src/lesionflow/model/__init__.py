"""Networks, the training loop and its checkpoints, test-time augmentation and inference.
Never reads test-split masks."""

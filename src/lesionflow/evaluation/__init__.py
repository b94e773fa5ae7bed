"""Metrics, lesion matching, bootstrap intervals, tuning on validation, post-processing and the
zero-Dice breakdown. Never trains or predicts."""

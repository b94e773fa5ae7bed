"""Small tables that several test modules build alike."""

import pandas as pd


def epochs_frame(train_loss=(0.9, 0.5, 0.3), val_loss=(1.0, 0.7, 0.6)) -> pd.DataFrame:
    """Three epochs of metrics_by_epoch.csv: val Dice peaks at epoch 2, losses fall."""
    return pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": train_loss,
            "val_loss": val_loss,
            "train_dice": [0.2, 0.5, 0.7],
            "val_dice": [0.3, 0.8, 0.6],
            "train_iou": [0.1, 0.35, 0.55],
            "val_iou": [0.2, 0.65, 0.45],
            "train_pearson": [0.2, 0.5, 0.7],
            "val_pearson": [0.3, 0.7, 0.6],
            "lr": [1e-4, 1e-3, 1e-5],
            "seconds": [1.0, 1.0, 1.0],
        }
    )


def trend_frame(train_loss, val_loss, val_dice) -> pd.DataFrame:
    """metrics_by_epoch.csv with only the columns the trend rules read, epochs numbered from 1."""
    n = len(train_loss)
    return pd.DataFrame(
        {"epoch": range(1, n + 1), "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice}
    )

"""Plain lines for the job log (stderr) that do not garble an active tqdm progress bar.

Never decides anything: it only writes what the training loop and its checkpoints report.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def log(message: str) -> None:
    """Write one line on stderr (the job log), above any progress bar that is drawing."""
    tqdm.write(message, file=sys.stderr)

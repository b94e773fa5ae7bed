"""How a mask's stored values become lesion / not lesion, whatever file they came from.

Never guesses: a mask is a label mask (0/1) or is cut at a threshold the caller gives.
"""

from __future__ import annotations

import numpy as np

# Half-way between 0 and 255: JPEG artefacts around a 0/255 mask stay on their side of the cut.
DEFAULT_MASK_THRESHOLD = 127


def distinct_values(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a mask channel."""
    if values.dtype in (np.uint8, np.uint16):
        # Marking the values seen is faster than np.unique for 8- and 16-bit pictures.
        seen = np.zeros(np.iinfo(values.dtype).max + 1, dtype=bool)
        seen[values.ravel()] = True
        return np.flatnonzero(seen).astype(values.dtype)
    return np.unique(values)


def is_label_mask(distinct: np.ndarray) -> bool:
    """Whether a mask holds only 0 and 1 (or only 1): a label mask where 1 is lesion."""
    return bool(distinct.size and distinct.max() == 1 and np.isin(distinct, (0, 1)).all())


def is_binary(distinct: np.ndarray) -> bool:
    """Whether a mask's distinct values are 0 and one other value, or a single value."""
    return distinct.size <= 1 or (distinct.size == 2 and distinct[0] == 0)


def lesion_mask(values: np.ndarray, threshold: int = DEFAULT_MASK_THRESHOLD, scale: int = 1) -> np.ndarray:
    """Bool lesion mask of stored ``values``: 1 in a label mask, else values above ``threshold * scale``.

    A mask holding only 0 and 1 is a label mask (as numpy or ITK exports write them) and a cut
    at 127 would silently empty it. ``scale`` lifts an 8-bit threshold to the values' range
    (257 for 16-bit pictures).
    """
    if values.dtype == bool:
        return values
    if is_label_mask(distinct_values(values)):
        return values == 1
    return values > threshold * scale

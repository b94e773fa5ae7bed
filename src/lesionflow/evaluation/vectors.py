"""Numbers handed to a metric, an interval or a calibration, checked to be one 1-D float array.

Must never let text pass as a number, nor import more of lesionflow than its errors: training,
calibration and every metric stage import it, and none may rerun when another's code changes.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from lesionflow.pipeline.errors import LesionflowError


def numeric_vector(values: ArrayLike, what: str) -> np.ndarray:
    """``values`` as a 1-D float array; LesionflowError naming ``what`` when it is not one."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise LesionflowError(f"{what}: not numbers ({err})") from None
    if arr.ndim != 1:
        raise LesionflowError(f"{what}: expected a 1-D sequence, got shape {arr.shape}")
    return arr


def finite_vector(values: ArrayLike, what: str, remedy: str) -> np.ndarray:
    """``values`` as a 1-D array of finite floats; a NaN or inf is an error naming its index, ending
    in ``remedy`` (what the caller must do about it)."""
    arr = numeric_vector(values, what)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise LesionflowError(f"{what}[{i}] is {arr[i]}; {remedy}")
    return arr

"""Subject-level bootstrap intervals for evaluation metrics, vectorised over all resamples at once.

Must never resample images of one subject independently, nor turn an undefined resample into 0 or 1.

The resampling unit is the subject: a patient may contribute several images (or lesions), which are
not independent, so a resample draws subjects with replacement and every row of a drawn subject
enters with that subject's multiplicity as its weight. Every statistic is computed for all resamples
at once from a (n_resamples, n_subjects) count matrix; there is no Python loop over resamples.

Tables scored with the same ``Resampler`` (two runs on the same test images, an image table and a
lesion table) see the same resamples, so ``difference`` gives paired intervals.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from lesionflow.evaluation.vectors import finite_vector, numeric_vector
from lesionflow.pipeline.errors import LesionflowError

# What a table with an undefined (NaN) value must do before it is resampled.
DROP_UNDEFINED = "drop rows with undefined values first"

# ---------------------------------------------------------------------------------------------
# Resampler and Estimate
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Resampler:
    """Subject multiplicities of every bootstrap resample, shared by every table scored with it.

    ``subjects`` are the distinct subjects, sorted; ``counts[r, k]`` is how often subject ``k`` was
    drawn in resample ``r`` (each row sums to the number of subjects).
    """

    subjects: tuple[str, ...]
    counts: np.ndarray
    seed: int
    confidence: float

    def __post_init__(self) -> None:
        _check_confidence(self.confidence, "bootstrap confidence")
        if self.counts.ndim != 2 or self.counts.shape[1] != len(self.subjects):
            raise LesionflowError(
                f"bootstrap counts have shape {self.counts.shape}; "
                f"expected (n_resamples, {len(self.subjects)})"
            )

    @classmethod
    def from_subjects(
        cls,
        subjects: Sequence[str],
        n_resamples: int,
        seed: int,
        confidence: float,
        config_key: str,
    ) -> Resampler:
        """Draw ``n_resamples`` resamples of the distinct subjects with replacement; reproducible by seed.

        ``config_key`` is the config section the three settings come from (``evaluate.bootstrap``,
        ``compare.bootstrap``); a bad setting is an error naming its key there.
        """
        _check_int(n_resamples, f"{config_key}.n_resamples", minimum=1)
        _check_int(seed, f"{config_key}.seed", minimum=0)
        _check_confidence(confidence, f"{config_key}.confidence")
        distinct = tuple(sorted({str(subject) for subject in subjects}))
        if not distinct:
            raise LesionflowError("bootstrap: no subjects to resample")
        n_subjects = len(distinct)
        rng = np.random.default_rng(int(seed))
        counts = rng.multinomial(n_subjects, np.full(n_subjects, 1.0 / n_subjects), size=int(n_resamples))
        # Read-only: several tables share these resamples, and a stray write would unpair them.
        counts.setflags(write=False)
        return cls(distinct, counts, int(seed), float(confidence))

    @property
    def n_resamples(self) -> int:
        """Number of bootstrap resamples."""
        return int(self.counts.shape[0])

    @property
    def n_subjects(self) -> int:
        """Number of distinct subjects."""
        return len(self.subjects)

    def subject_index(self, row_subjects: Sequence[str]) -> np.ndarray:
        """Position in ``self.subjects`` of each row's subject; LesionflowError for an unknown subject."""
        rows = _as_str_vector(row_subjects, "row subjects")
        known = np.asarray(self.subjects, dtype=str)
        if rows.size == 0:
            return np.zeros(0, dtype=np.intp)
        pos = np.searchsorted(known, rows)
        found = known[np.minimum(pos, known.size - 1)] == rows
        if not found.all():
            i = int(np.argmin(found))
            raise LesionflowError(
                f"row {i}: subject {str(rows[i])!r} is not one of the bootstrap's {known.size} subjects"
            )
        return pos.astype(np.intp)

    def row_weights(self, row_subjects: Sequence[str]) -> np.ndarray:
        """Each row's weight (its subject's multiplicity, int) in each resample: (n_resamples, n_rows)."""
        return self.counts[:, self.subject_index(row_subjects)]


@dataclass
class Estimate:
    """A point value, its value in every bootstrap resample (NaN where undefined) and the rows it used."""

    value: float
    samples: np.ndarray
    n: int
    confidence: float

    def interval(self) -> tuple[float, float]:
        """Percentile interval over the defined resamples; (nan, nan) when no resample is defined."""
        samples = np.asarray(self.samples, dtype=float)
        if not np.any(~np.isnan(samples)):
            return math.nan, math.nan
        tail = 100.0 * (1.0 - self.confidence) / 2.0
        low, high = np.nanpercentile(samples, [tail, 100.0 - tail])
        return float(low), float(high)

    @property
    def n_undefined_resamples(self) -> int:
        """Number of resamples in which the statistic is undefined (NaN)."""
        return int(np.count_nonzero(np.isnan(np.asarray(self.samples, dtype=float))))


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def ratio(num: ArrayLike, den: ArrayLike, row_subjects: Sequence[str], resampler: Resampler) -> Estimate:
    """sum(num) / sum(den) over the rows, on the original data and in every resample.

    A mean is ``ratio(values, ones)``. Every value must be finite: rows with undefined (NaN) values
    must be dropped by the caller (``mean`` does that). NaN where the denominator sums to 0.
    """
    num_v = finite_vector(num, "ratio numerator", DROP_UNDEFINED)
    den_v = finite_vector(den, "ratio denominator", DROP_UNDEFINED)
    idx = resampler.subject_index(row_subjects)
    _check_lengths(
        ("ratio numerator", num_v.size), ("ratio denominator", den_v.size), ("row subjects", idx.size)
    )
    return _ratio_by_index(num_v, den_v, idx, resampler)


def mean(values: ArrayLike, row_subjects: Sequence[str], resampler: Resampler) -> Estimate:
    """Mean of the defined values; NaN rows are excluded and ``Estimate.n`` counts the defined ones."""
    vals = numeric_vector(values, "mean values")
    idx = resampler.subject_index(row_subjects)
    _check_lengths(("mean values", vals.size), ("row subjects", idx.size))
    defined = ~np.isnan(vals)
    if np.isinf(vals).any():
        i = int(np.argmax(np.isinf(vals)))
        raise LesionflowError(f"mean values[{i}] is {vals[i]}; values must be finite or NaN (undefined)")
    vals = vals[defined]
    return _ratio_by_index(vals, np.ones_like(vals), idx[defined], resampler)


def roc_auc(
    y_true: ArrayLike, scores: ArrayLike, row_subjects: Sequence[str], resampler: Resampler
) -> Estimate:
    """ROC-AUC as scikit-learn's roc_auc_score (tied scores count 1/2); NaN where one class is absent."""
    pos, neg = _class_weights_by_threshold(y_true, scores, row_subjects, resampler, "roc_auc")
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    # Thresholds run from the highest score down, so the negatives scored below a group are the
    # ones not yet accumulated; a tie between a positive and a negative counts one half.
    neg_below = n_neg[:, None] - np.cumsum(neg, axis=1)
    wins = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    values = _divide(wins, n_pos * n_neg, defined=(n_pos > 0) & (n_neg > 0))
    return _estimate(values, int(np.asarray(scores).size), resampler)


def average_precision(
    y_true: ArrayLike, scores: ArrayLike, row_subjects: Sequence[str], resampler: Resampler
) -> Estimate:
    """Average precision as scikit-learn's average_precision_score; NaN where only one class is present.

    AP = sum over distinct thresholds (highest first) of (recall step) * precision at that threshold.
    """
    pos, neg = _class_weights_by_threshold(y_true, scores, row_subjects, resampler, "average_precision")
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    # A threshold whose rows all have weight 0 adds no recall; its precision is set to 0 (as
    # scikit-learn does) so that 0 * undefined does not poison the sum.
    precision = _divide(tp, tp + fp, defined=(tp + fp) > 0, fill=0.0)
    values = _divide((pos * precision).sum(axis=1), n_pos, defined=(n_pos > 0) & (n_neg > 0))
    return _estimate(values, int(np.asarray(scores).size), resampler)


def difference(a: Estimate, b: Estimate) -> Estimate:
    """Paired difference a - b resample by resample; both must come from the same Resampler."""
    _check_compatible((a, b), "difference")
    with np.errstate(invalid="ignore"):
        samples = np.asarray(a.samples, dtype=float) - np.asarray(b.samples, dtype=float)
    return Estimate(float(a.value) - float(b.value), samples, min(a.n, b.n), a.confidence)


def derived(fn: Callable[..., ArrayLike], *estimates: Estimate) -> Estimate:
    """A metric computed elementwise from others, e.g. ``derived(lambda p, s: 2 * p * s / (p + s), P, S)``.

    ``fn`` gets numpy float64 scalars for the point values and arrays for the samples, so 0/0 gives NaN
    (never an exception). ``n`` is the smallest ``n`` of the inputs.
    """
    if not estimates:
        raise LesionflowError("derived: needs at least one estimate")
    _check_compatible(estimates, "derived")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        value = fn(*(np.float64(est.value) for est in estimates))
        samples = fn(*(np.asarray(est.samples, dtype=float) for est in estimates))
    n_resamples = np.asarray(estimates[0].samples).size
    samples = np.broadcast_to(np.asarray(samples, dtype=float), (n_resamples,)).copy()
    return Estimate(float(value), samples, min(est.n for est in estimates), estimates[0].confidence)


def describe(est: Estimate, name: str) -> dict:
    """Flat dict ``{name, name_n, name_ci_low, name_ci_high}``; undefined values stay float NaN."""
    low, high = est.interval()
    return {name: float(est.value), f"{name}_n": int(est.n), f"{name}_ci_low": low, f"{name}_ci_high": high}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _ratio_by_index(num: np.ndarray, den: np.ndarray, idx: np.ndarray, resampler: Resampler) -> Estimate:
    # Per-subject sums turn every resample into one matrix product with the count matrix.
    num_s = np.bincount(idx, weights=num, minlength=resampler.n_subjects)
    den_s = np.bincount(idx, weights=den, minlength=resampler.n_subjects)
    num_total, den_total = float(num.sum()), float(den.sum())
    value = num_total / den_total if den_total != 0 else math.nan
    samples_den = resampler.counts @ den_s
    samples = _divide(resampler.counts @ num_s, samples_den, defined=samples_den != 0)
    return Estimate(value, samples, int(num.size), resampler.confidence)


def _class_weights_by_threshold(
    y_true: ArrayLike, scores: ArrayLike, row_subjects: Sequence[str], resampler: Resampler, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative weight at each distinct score (highest first); row 0 is the original data.

    Shapes (1 + n_resamples, n_distinct_scores). One sort serves every resample.
    """
    y = _binary_vector(y_true, f"{what} y_true")
    s = finite_vector(scores, f"{what} scores", DROP_UNDEFINED)
    idx = resampler.subject_index(row_subjects)
    _check_lengths((f"{what} y_true", y.size), (f"{what} scores", s.size), ("row subjects", idx.size))
    if s.size == 0:
        empty = np.zeros((1 + resampler.n_resamples, 0))
        return empty, empty
    order = np.argsort(-s, kind="stable")
    sorted_scores = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    weights = np.empty((1 + resampler.n_resamples, s.size))
    weights[0] = 1.0
    weights[1:] = resampler.counts[:, idx[order]]
    total = np.add.reduceat(weights, starts, axis=1)
    pos = np.add.reduceat(weights * y[order], starts, axis=1)
    # Weights are whole numbers, so total - pos is exact.
    return pos, total - pos


def _estimate(values: np.ndarray, n: int, resampler: Resampler) -> Estimate:
    """Split row 0 (original data) from the resamples."""
    return Estimate(float(values[0]), np.asarray(values[1:], dtype=float), n, resampler.confidence)


def _divide(num: np.ndarray, den: np.ndarray, defined: np.ndarray, fill: float = math.nan) -> np.ndarray:
    num, den = np.broadcast_arrays(np.asarray(num, dtype=float), np.asarray(den, dtype=float))
    out = np.full(num.shape, fill, dtype=float)
    np.divide(num, den, out=out, where=defined)
    return out


def _check_compatible(estimates: Sequence[Estimate], what: str) -> None:
    lengths = {np.asarray(est.samples).size for est in estimates}
    if len(lengths) != 1:
        raise LesionflowError(
            f"{what}: estimates have {sorted(lengths)} resamples; they must come from the same Resampler"
        )
    confidences = {est.confidence for est in estimates}
    if len(confidences) != 1:
        raise LesionflowError(f"{what}: estimates have different confidences {sorted(confidences)}")


def _check_int(value: object, key: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise LesionflowError(f"{key} must be an integer >= {minimum}, got {value!r}")


def _check_confidence(value: object, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) < 1.0:
        raise LesionflowError(f"{key} must be a number in (0, 1), got {value!r}")


def _check_lengths(*named: tuple[str, int]) -> None:
    if len({size for _, size in named}) > 1:
        sizes = ", ".join(f"{name} {size}" for name, size in named)
        raise LesionflowError(f"lengths differ: {sizes}")


def _binary_vector(values: ArrayLike, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise LesionflowError(f"{what}: expected a 1-D sequence, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    bad = ~np.isin(arr, [0, 1])
    if bad.any():
        i = int(np.argmax(bad))
        raise LesionflowError(f"{what}[{i}] is {arr[i]!r}; expected a boolean (0 or 1)")
    return arr.astype(bool)


def _as_str_vector(values: Sequence[str], what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1:
        raise LesionflowError(f"{what}: expected a 1-D sequence, got shape {arr.shape}")
    return arr.astype(str)

"""What both built-in generators share: their parameter checks and how images fall to subjects.

It must never draw an image: the generators do; this only decides who has how many images, and
which are lesion-free.
"""

from __future__ import annotations

import numpy as np

from lesionflow.pipeline.errors import LesionflowError


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_parameters(
    n_images: int,
    image_size: int,
    lesion_free_fraction: float,
    seed: int,
    sizes: tuple[int, int | None],
    what: str,
) -> None:
    """Raise LesionflowError naming the ``data.synthetic`` key of the first bad parameter.

    ``sizes`` is the smallest and largest ``image_size`` the generator draws (None: no largest);
    ``what`` says what the generator draws, for the message.
    """
    if not _is_int(n_images) or n_images < 1:
        raise LesionflowError(f"data.synthetic.n_images: expected an integer >= 1, got {n_images!r}")
    low, high = sizes
    if not _is_int(image_size) or image_size < low or (high is not None and image_size > high):
        expected = f">= {low}" if high is None else f"from {low} to {high}"
        raise LesionflowError(
            f"data.synthetic.image_size: expected an integer {expected} for {what}, got {image_size!r}"
        )
    if (
        not isinstance(lesion_free_fraction, int | float | np.floating)
        or isinstance(lesion_free_fraction, bool)
        or not 0.0 <= float(lesion_free_fraction) <= 1.0
    ):
        raise LesionflowError(
            "data.synthetic.lesion_free_fraction: expected a number in [0, 1], "
            f"got {lesion_free_fraction!r}"
        )
    if not _is_int(seed) or seed < 0:
        raise LesionflowError(f"data.synthetic.seed: expected an integer >= 0, got {seed!r}")


def images_per_subject(n_images: int, most: int, rng: np.random.Generator) -> list[int]:
    """Images per subject (1 to ``most``) adding up to exactly ``n_images``."""
    sizes: list[int] = []
    while sum(sizes) < n_images:
        sizes.append(int(rng.integers(1, most + 1)))
    sizes[-1] -= sum(sizes) - n_images
    return sizes


def lesion_free_flags(sizes: list[int], n_free: int, rng: np.random.Generator) -> list[list[bool]]:
    """Per subject, which of its images are lesion-free: exactly ``n_free`` in all, whole subjects first.

    Real patients tend to be either affected or not, so lesion status is mostly shared within a
    subject; the subject where the count runs out ends up mixed (its first images lesion-free, as
    when lesions appear between two visits), which keeps the split honest.
    """
    flags = [[False] * size for size in sizes]
    remaining = n_free
    for subject in rng.permutation(len(sizes)):
        if remaining == 0:
            break
        take = min(remaining, sizes[subject])
        flags[subject][:take] = [True] * take
        remaining -= take
    return flags

"""Tests of lesionflow.reports.examples: the example grid, an empty group, and large images shown
small with a one-pixel lesion still visible."""

import numpy as np

from lesionflow.reports import examples


def test_example_grid_has_four_panels_per_image():
    rng = np.random.default_rng(0)
    images = [rng.random((3, 16, 16), dtype=np.float32), rng.random((1, 16, 16), dtype=np.float32)]
    masks = [np.zeros((16, 16), bool), np.eye(16, dtype=bool)]
    probs = [rng.random((16, 16), dtype=np.float32) for _ in range(2)]
    fig = examples.plot_examples(["a", "b"], images, masks, probs, masks, titles=["A", "B"])
    axes = fig.get_axes()
    assert len(axes) == 8
    assert [len(ax.get_images()) for ax in axes[:4]] == [1, 2, 1, 2]
    assert axes[4].get_ylabel() == "B"


def test_empty_example_group_gets_a_figure_that_says_so():
    fig = examples.plot_examples([], [], [], [], [])
    assert fig.get_axes()[0].texts[0].get_text() == "no images in this group"


def test_large_examples_are_shown_small_and_a_one_pixel_lesion_stays_visible():
    image = np.random.default_rng(0).random((3, 1600, 2400), dtype=np.float32)
    mask = np.zeros((1600, 2400), dtype=bool)
    mask[800, 1200] = True
    prob = mask.astype(np.float32)
    shown_image, shown_mask, shown_prob, shown_pred = examples.for_display(image, mask, prob, mask)
    assert max(shown_mask.shape) == examples.DISPLAY_SIZE and shown_image.shape[1:] == shown_mask.shape
    assert shown_mask.sum() >= 1 and shown_pred.sum() >= 1 and shown_prob.shape == shown_mask.shape
    small = np.zeros((40, 60), dtype=bool)
    assert examples.for_display(image[:, :40, :60], small, small.astype(np.float32), small)[1] is small

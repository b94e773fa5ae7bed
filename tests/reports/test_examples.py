"""Tests of lesionflow.reports.examples: the example grid, an empty group, and large images shown
small with a one-pixel lesion still visible; volumes as three planes (and their worst slice) read
in RAS and drawn the radiological way; example titles; the analysis notebook that shows them."""

import nbformat
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from IPython.core.inputtransformer2 import TransformerManager

from lesionflow.data.manifest import read_manifest
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


# ---------------------------------------------------------------- volumes

# A tiny RAS volume: 12 voxels left -> right, 14 posterior -> anterior, 8 inferior -> superior.
SHAPE = (12, 14, 8)
LOCKED = {"threshold": 0.5, "min_lesion_area": 0, "presence_threshold": 0.5,
          "presence_score": "max_probability", "connectivity": 1}  # fmt: skip


def tiny_volume_case(seed):
    """Image, reference (a box with centroid (4, 6, 3)), probability map and prediction."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[3:6, 4:9, 2:5] = True
    prob = np.where(np.roll(mask, 1, axis=2), 0.9, 0.1).astype(np.float32)
    return rng.random((1, *SHAPE), dtype=np.float32) * 400, mask, prob, prob >= 0.5


def test_volume_examples_show_their_three_planes_through_the_lesion_and_the_worst_slice():
    cases = [tiny_volume_case(0), tiny_volume_case(1)]
    images, masks, probs, preds = (list(arrays) for arrays in zip(*cases, strict=True))
    spacings = [(1.0, 1.0, 2.5), (0.5, 0.5, 1.0)]
    fig = examples.plot_examples(["a", "b"], images, masks, probs, preds, spacings, titles=["A", "B"])
    axes = fig.get_axes()
    assert len(axes) == 2 * 3 * 4
    labels = [ax.get_ylabel() for ax in axes[::4]]
    planes = ["axial z=3", "coronal y=6", "sagittal x=4"]
    assert labels == ["A\n" + planes[0], *planes[1:], "B\n" + planes[0], *planes[1:]]
    # Coronal rows are z (2.5 mm) over columns x (1 mm): the panel is drawn 2.5 times as tall.
    assert axes[4].get_aspect() == pytest.approx(2.5) and axes[0].get_aspect() == pytest.approx(1.0)
    assert axes[4].get_images()[0].get_array().shape == (8, 12)
    worst = examples.plot_examples(["a", "b"], images, masks, probs, preds, spacings, worst_slice=True)
    labels = [ax.get_ylabel() for ax in worst.get_axes()[::4]]
    # The prediction is the reference moved up one slice: slices 2 and 5 are wholly wrong (15 each).
    assert len(worst.get_axes()) == 2 * 4 * 4 and labels[3] == "worst axial z=2: 15 voxels wrong"


def test_pictures_get_no_worst_slice_and_keep_square_pixels():
    rng = np.random.default_rng(0)
    image, prob = rng.random((3, 16, 20), dtype=np.float32), rng.random((16, 20), dtype=np.float32)
    mask = prob > 0.8
    fig = examples.plot_examples(["a"], [image], [mask], [prob], [mask], titles=["A"], worst_slice=True)
    axes = fig.get_axes()
    assert len(axes) == 4 and axes[0].get_ylabel() == "A"
    assert all(ax.get_aspect() == 1.0 for ax in axes)
    assert axes[0].get_images()[0].get_array().shape == (16, 20, 3)


def test_volume_examples_are_read_in_ras_and_shown_with_the_patients_left_on_the_right(tmp_path):
    # Stored left-right flipped (LAS): stored x index 10 is the patient's left, RAS index 1. The
    # marker sits on the axial plane through the lesion's centroid, RAS (1, 12, 6).
    stored = np.zeros(SHAPE, dtype=np.float32)
    stored[10, 13, 6] = 1000.0
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[9:12, 11:14, 5:8] = 1
    affine = np.diag([-1.0, 1.0, 2.5, 1.0])
    nib.save(nib.Nifti1Image(stored, affine), tmp_path / "a.nii.gz")
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "a_mask.nii.gz")
    (tmp_path / "manifest.csv").write_text("image,mask,subject,image_id\na.nii.gz,a_mask.nii.gz,s1,a\n")
    ras = nib.as_closest_canonical(nib.load(tmp_path / "a_mask.nii.gz")).get_fdata() > 0
    probs = {"a": np.where(ras, 0.9, 0.0).astype(np.float32)}
    loaded = examples.load_examples(["a"], read_manifest(tmp_path / "manifest.csv"), probs, LOCKED)
    assert loaded.spacings == [(1.0, 1.0, 2.5)] and np.array_equal(loaded.masks[0], ras)
    assert np.array_equal(loaded.preds[0], ras)
    axial = examples.plot_examples(["a"], *loaded).get_axes()[0].get_images()[0].get_array()
    # Anterior (y=13) is the top row; the patient's left (RAS x=1) is on the right of the panel.
    assert np.argwhere(np.asarray(axial) == 1000).tolist() == [[0, 12 - 1 - 1]]


def test_large_volumes_are_shown_small_and_a_one_voxel_lesion_stays_visible():
    image = np.random.default_rng(0).random((1, 900, 20, 12), dtype=np.float32)
    mask = np.zeros((900, 20, 12), dtype=bool)
    mask[450, 10, 6] = True
    shown_image, shown_mask, shown_prob, _ = examples.for_display(image, mask, mask.astype(np.float32), mask)
    assert max(shown_mask.shape) == examples.DISPLAY_SIZE and shown_image.shape[1:] == shown_mask.shape
    assert shown_mask.sum() >= 1 and shown_prob.shape == shown_mask.shape


def test_example_titles_count_pixels_for_pictures_and_give_millilitres_for_volumes():
    rows = pd.DataFrame({"image_id": ["0042"], "dice": [0.12345], "pred_pixels": [450]})
    assert examples.example_titles("Worst", rows) == ["Worst: 0042, Dice 0.123, 450 px predicted"]
    volumes = rows.assign(pred_volume_ml=[1.234])
    assert examples.example_titles("Best", volumes) == [
        "Best: 0042, Dice 0.123, 450 voxels (1.23 mL) predicted"
    ]
    unmeasured = rows.assign(pred_volume_ml=[float("nan")])
    assert examples.example_titles("Best", unmeasured) == ["Best: 0042, Dice 0.123, 450 voxels predicted"]


def test_analysis_notebook_is_valid_and_every_code_cell_compiles(repo_root):
    # The notebook is executed by tests/workflow; here only its JSON and its Python are checked.
    path = repo_root / "notebooks" / "analysis.ipynb"
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    for cell in notebook.cells:
        if cell.cell_type == "code":
            compile(TransformerManager().transform_cell(cell.source), f"{path.name}:{cell.id}", "exec")

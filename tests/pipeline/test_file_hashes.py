"""Dataset fingerprints: content, not paths or modification times."""

import os

import numpy as np
from PIL import Image
from tiny_data import write_tiny_manifest

from lesionflow.pipeline.file_hashes import FileHashCache, manifest_fingerprint


def test_manifest_fingerprint_follows_content_not_mtime(tmp_path):
    manifest = write_tiny_manifest(tmp_path / "data")
    cache = FileHashCache(tmp_path / "cache.json")
    before = manifest_fingerprint(manifest, cache)
    for file in manifest.parent.iterdir():
        os.utime(file, ns=(1, 10**18))
    assert manifest_fingerprint(manifest, FileHashCache(tmp_path / "cache.json")) == before

    pixels = np.array(Image.open(manifest.parent / "img1.png"))
    pixels[0, 0, 0] ^= 1
    Image.fromarray(pixels).save(manifest.parent / "img1.png")
    assert manifest_fingerprint(manifest, FileHashCache(tmp_path / "cache.json")) != before


def test_moving_a_manifest_dataset_keeps_its_fingerprint(tmp_path):
    first = manifest_fingerprint(write_tiny_manifest(tmp_path / "a"), FileHashCache(tmp_path / "c"))
    second = manifest_fingerprint(
        write_tiny_manifest(tmp_path / "b"), FileHashCache(tmp_path / "c")
    )
    assert first == second


def test_hash_cache_only_rehashes_changed_files(tmp_path):
    manifest = write_tiny_manifest(tmp_path / "data")
    cache = FileHashCache(tmp_path / "cache.json")
    manifest_fingerprint(manifest, cache)
    reloaded = FileHashCache(tmp_path / "cache.json")
    manifest_fingerprint(manifest, reloaded)
    assert reloaded.dirty is False and len(reloaded.entries) == 6


def test_a_missing_file_is_fingerprinted_so_the_data_stage_can_report_every_one(tmp_path):
    manifest = write_tiny_manifest(tmp_path / "data")
    complete = manifest_fingerprint(manifest, FileHashCache(tmp_path / "c"))
    (manifest.parent / "mask2.png").unlink()
    # No error while planning: the manifest check of the data job lists all missing files.
    missing = manifest_fingerprint(manifest, FileHashCache(tmp_path / "c"))
    assert missing != complete


def test_a_further_sequence_and_a_score_are_part_of_the_fingerprint_and_a_mask_column_is_not_needed(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "t1.bin").write_bytes(b"one")
    (folder / "flair.bin").write_bytes(b"flair")
    manifest = folder / "manifest.csv"
    manifest.write_text("image,image_t1,subject,loes\nflair.bin,t1.bin,s1,3\n")
    before = manifest_fingerprint(manifest, FileHashCache(tmp_path / "c"))
    (folder / "t1.bin").write_bytes(b"two")
    after_t1 = manifest_fingerprint(manifest, FileHashCache(tmp_path / "c"))
    manifest.write_text("image,image_t1,subject,loes\nflair.bin,t1.bin,s1,4\n")
    after_score = manifest_fingerprint(manifest, FileHashCache(tmp_path / "c"))
    assert len({before, after_t1, after_score}) == 3

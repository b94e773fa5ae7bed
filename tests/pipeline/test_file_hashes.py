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

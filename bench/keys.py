"""Benchmark: fingerprinting a manifest dataset, cold and with the (path, size, mtime, inode) cache.

It never writes into the repository except its JSON report (--out); the dataset is temporary.

Every Snakemake invocation (and every cluster job) parses the Snakefile and recomputes the
data key, so the warm path must cost little more than stat-ing the files. The bare reference
is hashlib.blake2b over the same bytes, measured in the same run.

    .venv/bin/python bench/keys.py [--images 400] [--size 512] [--out bench/out/keys.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lesionflow.pipeline.file_hashes import FileHashCache, manifest_fingerprint


def make_dataset(folder: Path, n_images: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    rows = ["image,mask,subject"]
    for i in range(n_images):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            folder / f"i{i}.png"
        )
        Image.fromarray((rng.random((size, size)) > 0.99).astype(np.uint8) * 255).save(
            folder / f"m{i}.png"
        )
        rows.append(f"i{i}.png,m{i}.png,s{i // 2}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def bare_hash(folder: Path) -> float:
    start = time.perf_counter()
    for file in sorted(folder.glob("*.png")):
        hashlib.blake2b(file.read_bytes(), digest_size=16).hexdigest()
    return time.perf_counter() - start


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = make_dataset(folder, args.images, args.size)
        total_mb = sum(f.stat().st_size for f in folder.glob("*.png")) / 1e6
        reference = bare_hash(folder)
        cache_path = folder / "cache.json"
        cold = timed(lambda: manifest_fingerprint(manifest, FileHashCache(cache_path)))
        warm = timed(lambda: manifest_fingerprint(manifest, FileHashCache(cache_path)))
    print(f"dataset: {2 * args.images} files, {total_mb:.1f} MB")
    print(f"bare blake2b over the bytes : {reference * 1000:8.1f} ms (reference)")
    print(f"cold fingerprint            : {cold * 1000:8.1f} ms  ratio {cold / reference:5.2f}")
    print(f"warm fingerprint (cached)   : {warm * 1000:8.1f} ms  ratio {warm / reference:5.2f}")
    if args.out:
        result = {
            "files": 2 * args.images, "size": args.size, "megabytes": round(total_mb, 1),
            "bare_blake2b_s": reference, "cold_s": cold, "warm_s": warm,
            "ratio_cold": cold / reference, "ratio_warm": warm / reference,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

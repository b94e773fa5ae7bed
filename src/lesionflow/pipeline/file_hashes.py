"""Dataset fingerprints: a user manifest's rows with every file replaced by its content hash.

Never reads more than a file's bytes; a file whose size, time and inode are unchanged is not read again.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lesionflow.pipeline.artifacts import write_json
from lesionflow.pipeline.errors import LesionflowError, one_line
from lesionflow.pipeline.keys import digest


def file_digest(file: Path) -> str:
    """blake2b (16 bytes, hex) of a file's bytes, read a megabyte at a time."""
    hasher = hashlib.blake2b(digest_size=16)
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def stat_token(file: Path) -> str:
    """``path|size|mtime_ns|inode`` of ``file``: what a FileHashCache entry is keyed on."""
    stat = file.stat()
    return f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"


class FileHashCache:
    """Values computed from files (by default their content hashes), kept in ``path`` (a JSON file)
    keyed on (path, size, mtime_ns, inode), so unchanged files are only stat'ed."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, Any] = {}
        self.dirty = False
        if path is not None and path.exists():
            try:
                self.entries = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                self.entries = {}

    def cached(self, file: Path, compute: Callable[[Path], Any]) -> Any:
        """``compute(file)``, from the cache when the file's stat is unchanged."""
        token = stat_token(file)
        if token not in self.entries:
            self.entries[token] = compute(file)
            self.dirty = True
        return self.entries[token]

    def content_hash(self, file: Path) -> str:
        """blake2b of the file's bytes, from the cache when its stat is unchanged."""
        return self.cached(file, file_digest)

    def save(self) -> None:
        """Write the cache back if anything was computed."""
        if self.path is not None and self.dirty:
            write_json(self.path, self.entries)
            self.dirty = False


def _is_further_image(column: str) -> bool:
    # Further sequences of a case (image_t1, image_t2; data.manifest.MODALITY_PREFIX), hashed by
    # content like the image itself. Not imported from there: plan code stays free of stage code.
    return column.startswith("image_") and column != "image_id"


def manifest_fingerprint(manifest: Path, cache: FileHashCache) -> str:
    """Hash of a user manifest's rows with every listed file replaced by its content hash.

    Paths themselves are left out, so moving or renaming the dataset keeps its key.
    """
    try:
        # utf-8-sig: Excel's CSV export starts with a byte-order mark, which is not part of "image".
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise LesionflowError(f"manifest {manifest} (config key 'data.manifest') does not exist") from None
    except OSError as err:  # a folder, a name too long, no permission
        raise LesionflowError(
            f"manifest {manifest} (config key 'data.manifest') cannot be read: {one_line(err)}"
        ) from None
    except (UnicodeDecodeError, csv.Error):
        rows = []  # not CSV text: the data stage's manifest check says where
    # The mask column may be left out when the manifest carries scores instead (regression); the
    # data stage checks that against data.score_column.
    if not rows or {"image", "subject"} - set(rows[0]):
        # No rows or no image column: nothing to follow into files. The data stage's manifest
        # check names what is wrong (empty, header only, which column), with every other problem.
        return digest({"unreadable_manifest": cache.content_hash(manifest)}, length=32)
    files = [c for c in rows[0] if c in ("image", "mask") or _is_further_image(c)]
    fingerprinted = []
    for row in rows:
        entry = {k: v for k, v in row.items() if k not in files}
        entry.setdefault("image_id", Path(row["image"]).stem)
        for column in files:
            file = manifest.parent / (row[column] or "")
            # A missing file is part of the fingerprint, not an error here: the data stage's
            # manifest check then reports every missing file at once, with its row.
            entry[column] = cache.content_hash(file) if file.is_file() else f"missing:{row[column]}"
        fingerprinted.append(entry)
    cache.save()
    return digest(fingerprinted, length=32)

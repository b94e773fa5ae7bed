"""Tiny pictures, masks and manifests, and the one-line error checks, that the bad-input tests share."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from manifests import binary_mask, ramp, write_manifest
from PIL import Image

from lesionflow.data.manifest_check import ManifestProblems, validate_manifest
from lesionflow.pipeline.errors import LesionflowError

WIDTH, HEIGHT = 16, 12
SCORES = {"score_column": "loes", "score_range": [0, 34], "invalid_scores": "error"}


def save_picture(path: Path, array: np.ndarray, **options: object) -> Path:
    """``array`` saved by Pillow at ``path`` (kind from the suffix), its folder made first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def save_png48(path: Path, rgb: np.ndarray) -> Path:
    """``rgb`` (H, W, 3) uint16 as a 16-bit-per-channel PNG, written by hand: Pillow cannot save one."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16 bits, truecolour
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def write_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """A sound image and binary mask named ``name``."""
    return (
        save_picture(folder / "images" / f"{name}.png", ramp()),
        save_picture(folder / "masks" / f"{name}.png", binary_mask()),
    )


def subjects_manifest(folder: Path, subjects: list[str]) -> Path:
    """A manifest of one sound image and mask per entry of ``subjects``, under that subject."""
    rows = []
    for index, subject in enumerate(subjects):
        write_pair(folder, f"i{index}")
        rows.append(f"images/i{index}.png,masks/i{index}.png,{subject}")
    return write_manifest(folder, "\n".join(["image,mask,subject", *rows]) + "\n")


def error_line(call: Callable[..., object], *args: object, **kwargs: object) -> str:
    """The message of the LesionflowError that ``call`` raises, checked to be one line."""
    with pytest.raises(LesionflowError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def problem_lines(manifest: Path, settings: dict | None = None) -> list[str]:
    """The manifest check's problem lines (after its count line), each checked to be one line."""
    with pytest.raises(ManifestProblems) as caught:
        validate_manifest(manifest, settings)
    lines = caught.value.lines
    assert all("\n" not in line for line in lines)
    assert lines[0].startswith(f"manifest {manifest}: ")
    return lines[1:]


def where(manifest: Path, row: int, column: str, file: Path) -> str:
    """How a problem line starts when it names a row, a column and the file that cell names."""
    return f"manifest {manifest}, row {row}, column '{column}', file {file}: "

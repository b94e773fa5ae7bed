"""The stage scripts and Snakemake on bad input: exit code, last stderr line, nothing started or lost."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from reliability.bad_input_files import SCORES, subjects_manifest, where, write_manifest, write_pair
from schema_settings import split_section, top_level_section

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
# What a job folder is called: results/<stage>/<12 hex digits>, so the stage writes its record.
KEY = "0123456789ab"


def _stage(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(SCRIPTS / f"{script}.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


def _checksums(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_the_data_stage_exits_2_on_a_bad_manifest_and_writes_nothing(tmp_path):
    image, _ = write_pair(tmp_path, "a")
    write_pair(tmp_path, "b")
    (tmp_path / "images" / "dir.png").mkdir()
    manifest = write_manifest(
        tmp_path,
        "image,mask,subject,loes\nimages/a.png,masks/a.png,s1,N/A\nimages/dir.png,masks/b.png,s2,3\n",
    )
    settings = {**top_level_section("data", source="manifest", manifest=str(manifest)), **SCORES}
    out = tmp_path / "results" / "data" / KEY

    result = _stage("data", "--settings", json.dumps(settings), "--out", str(out))

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    folder = tmp_path / "images" / "dir.png"
    assert lines[-3:] == [
        f"lesionflow: error: manifest {manifest}: 2 problems in 2 rows",
        f"  {where(manifest, 2, 'loes', image)}expected a score, found 'N/A', which marks a missing value",
        f"  {where(manifest, 3, 'image', folder)}is a directory; expected an image file",
    ]
    # No manifest.csv, so no split job can start; no provenance record claims the job ran.
    assert not out.exists() or not any(out.iterdir())


def test_a_failing_split_exits_2_and_keeps_what_the_data_stage_wrote(tmp_path):
    manifest = subjects_manifest(tmp_path / "user", ["s1", "s1", "s2"])
    data_out = tmp_path / "results" / "data" / KEY
    split_out = tmp_path / "results" / "split" / KEY
    settings = top_level_section("data", source="manifest", manifest=str(manifest))
    assert _stage("data", "--settings", json.dumps(settings), "--out", str(data_out)).returncode == 0
    before = _checksums(data_out)
    assert {"manifest.csv", "images.csv", "lesions.csv", "data_summary.json"} <= set(before)

    result = _stage(
        "split",
        "--manifest",
        str(data_out / "manifest.csv"),
        "--settings",
        json.dumps(split_section()),
        "--out",
        str(split_out),
    )

    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "lesionflow: error: split: the dataset has 2 subject(s); at least 3 are needed for train, val "
        "and test without sharing a subject"
    )
    assert not split_out.exists() or not any(split_out.iterdir())
    assert _checksums(data_out) == before


def test_snakemake_stops_on_a_bad_config_with_its_line_last_and_starts_no_job(tmp_path):
    config = {"runs": {"a": {}, "e": {"source": "ensemble", "ensemble": {"members": ["a", "zz"]}}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    command = [
        str(SNAKEMAKE),
        "--snakefile",
        str(REPO_ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(tmp_path / "config.yaml"),
        "--cores",
        "1",
    ]

    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=300)

    assert result.returncode != 0
    assert result.stderr.splitlines()[-1] == (
        "lesionflow: error: config key 'runs.e.ensemble.members' names 'zz', which is neither a run nor "
        "a recipe with seeds; runs it can name: a"
    )
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()

"""The code this checkout's stages run: the installed lesionflow package and this workflow."""

from pathlib import Path

from lesionflow.pipeline.fingerprints import CodeBase

REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_CODE = CodeBase.installed(REPO_ROOT)

"""lesionflow: content-addressed lesion segmentation pipelines under Snakemake.

The library holds all logic; scripts/ and the Snakemake rules only call into it.
"""

from importlib.metadata import PackageNotFoundError, version

# Read from the installed distribution, not written here: every stage executes this file, so a
# version number in its code would make each release change every content key.
try:
    __version__ = version("lesionflow")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "unknown"

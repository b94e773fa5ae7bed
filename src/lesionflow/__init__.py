"""lesionflow: content-addressed lesion segmentation pipelines under Snakemake.

The library holds all logic; scripts/ and the Snakemake rules only call into it.
"""

__version__ = "0.1.0"

"""The file names the evaluate stage writes, per level, and how its summary tells a run of several
lesion classes; read by the stage, the rules and the readers of its summaries.

Imports nothing: the Snakefile reads it at every start, cluster jobs included, and must not pay
for the metrics' imports to learn a file name.
"""

# The two levels metrics are computed at: whole source images at their original size, and the
# items training saw (tiles, or whole preprocessed images) at the preprocessed resolution.
FILE_NAMES = {
    "image": {
        "per_item": "per_image_{}.csv", "lesions": "lesions_{}.csv", "summary": "summary.json"
    },
    "tile": {
        "per_item": "per_tile_{}.csv", "lesions": "lesions_tiles_{}.csv",
        "summary": "summary_tiles.json",
    },
}


def is_class_summary(summary: dict) -> bool:
    """Whether an evaluate summary is of several lesion classes (it names them in ``classes``)."""
    return isinstance(summary.get("classes"), list)

"""The file names the evaluate stage writes, per level; read by the stage and by the rules.

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

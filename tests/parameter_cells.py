"""The values a notebook's papermill parameters cell assigns, for tests of the notebooks."""

from pathlib import Path

import nbformat


def notebook_parameters(notebook_path: Path) -> dict:
    """Run the notebook's cell tagged ``parameters`` as the notebook would; return what it assigns."""
    notebook = nbformat.read(notebook_path, as_version=4)
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    values: dict = {}
    exec(cell.source, values)  # noqa: S102 - the notebook's own parameters cell
    return {name: value for name, value in values.items() if name != "__builtins__"}

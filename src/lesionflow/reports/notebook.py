"""Execute a parameterised notebook with papermill and export it to HTML, both atomically.

Must never leave an executed notebook or HTML of a failed run where a finished one would be expected.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lesionflow.pipeline.artifacts import atomic_path
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.sharing import shareable_path


def run_notebook(
    notebook_path: str | os.PathLike,
    parameters: Mapping[str, Any],
    out_dir: str | os.PathLike,
    cwd: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Execute ``notebook_path`` with ``parameters``; write ``<stem>.ipynb`` and ``<stem>.html``.

    The HTML hides the code (the executed .ipynb keeps it, for whoever wants to rerun or extend
    it). If a cell fails, the executed notebook is kept as ``<stem>.failed.ipynb`` for its
    traceback, no ``<stem>.ipynb``/``.html`` is left, and a LesionflowError names the notebook,
    the cell and its error. Relative paths in ``parameters`` are resolved from ``cwd``
    (default: the current directory). The executed notebook's papermill record names the
    notebook and itself relative to the current directory (see :func:`shareable_path`), never by
    this machine's absolute paths. Returns the two output paths.
    """
    import nbformat
    import papermill
    from nbconvert import HTMLExporter
    from papermill.exceptions import PapermillExecutionError

    notebook_path = Path(notebook_path)
    if not notebook_path.is_file():
        raise LesionflowError(f"notebook {notebook_path} does not exist")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = notebook_path.stem
    outputs = {"ipynb": out_dir / f"{stem}.ipynb", "html": out_dir / f"{stem}.html"}
    failed = out_dir / f"{stem}.failed.ipynb"
    failed.unlink(missing_ok=True)
    with atomic_path(outputs["ipynb"]) as tmp:
        try:
            with warnings.catch_warnings():
                # The temporary name ends in .tmp by design (see atomic_path), not .ipynb.
                warnings.filterwarnings("ignore", message=".*does not end in one of")
                executed = papermill.execute_notebook(
                    str(notebook_path),
                    str(tmp),
                    parameters=dict(parameters),
                    kernel_name="python3",
                    progress_bar=False,
                    cwd=None if cwd is None else str(cwd),
                )
        except PapermillExecutionError as err:
            if tmp.exists():
                os.replace(tmp, failed)
            for stale in outputs.values():
                # An older report beside a failed run would pass for this run's result.
                stale.unlink(missing_ok=True)
            raise LesionflowError(
                f"notebook {notebook_path} failed at cell In [{err.exec_count}]: "
                f"{err.ename}: {err.evalue} (executed notebook with traceback: {failed})"
            ) from err
        executed = nbformat.from_dict(executed)
        _record_shareable_paths(executed, notebook_path, outputs["ipynb"])
        nbformat.write(executed, str(tmp))
        # Readers of the HTML want tables and figures; the code stays in the .ipynb.
        exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
        body, _ = exporter.from_notebook_node(executed)
    with atomic_path(outputs["html"]) as tmp:
        tmp.write_text(body, encoding="utf-8")
    return outputs


def _record_shareable_paths(executed: Any, notebook_path: Path, output: Path) -> None:
    """Papermill's record of the run names the notebook and its output as this machine placed
    them (the workflow's folder, the project's temporary file): a shared notebook names them
    relative to the project, or as they stand in the workflow (notebooks/<name>.ipynb)."""
    record = executed.metadata.get("papermill")
    if record is None:
        return
    record["input_path"] = shareable_path(notebook_path, Path(notebook_path.parent.name, notebook_path.name))
    record["output_path"] = shareable_path(output, Path(output.name))


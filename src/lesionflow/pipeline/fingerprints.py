"""Code fingerprints: the hash of exactly the code a stage executes, and nothing else.

A stage executes its entry point in scripts/, its notebook's code cells, and every lesionflow
module these import, transitively, with the packages around them. Comments, docstrings and
layout never count. Never hashes an absolute path, so a moved checkout keeps its keys.
"""

from __future__ import annotations

import ast
import json
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import lesionflow
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.file_hashes import FileHashCache, stat_token
from lesionflow.pipeline.keys import digest
from lesionflow.pipeline.stages import STAGES

PACKAGE = "lesionflow"


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


@cache
def normalised_code(source: str) -> str:
    """The syntax tree of Python ``source`` without docstrings, comments or layout."""
    return ast.dump(_strip_docstrings(ast.parse(source)), include_attributes=False)


@cache
def imported_names(source: str) -> frozenset[str]:
    """Every dotted lesionflow name that an import statement of ``source`` names.

    ``from lesionflow.evaluation import metrics`` names both the package and, possibly, the module
    ``lesionflow.evaluation.metrics``; which names are modules is decided against the files.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return frozenset(found)


def _notebook_cells(path: Path) -> list[str]:
    # Only code cells decide what a notebook computes; outputs and markdown do not.
    cells = json.loads(path.read_text()).get("cells", [])
    return ["".join(c.get("source", "")) for c in cells if c.get("cell_type") == "code"]


def _python_lines(cell: str) -> str:
    # IPython magics and shell escapes are not Python; they import nothing of ours.
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.splitlines())


def module_summary(file: Path) -> dict:
    """``{"code": digest of the normalised code, "imports": dotted lesionflow names}`` of a module."""
    source = file.read_text()
    return {"code": digest(normalised_code(source), length=32), "imports": sorted(imported_names(source))}


class ModuleSummaries(FileHashCache):
    """Each module's :func:`module_summary`, kept between plannings (see FileHashCache), so that
    planning parses only edited modules."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path)

    def summary(self, file: Path) -> dict:
        """The module's summary, parsed only when the file changed."""
        return self.cached(file, module_summary)

    def save(self) -> None:
        """As FileHashCache.save, keeping only the entries of files as they are now (the cache is
        shared by every project and checkout of a user, so old versions must not pile up); a cache
        that cannot be written loses nothing."""
        if self.dirty:
            self.entries = {token: value for token, value in self.entries.items() if _current(token)}
        try:
            super().save()
        except OSError:
            return


def _current(token: str) -> bool:
    # Whether the file a FileHashCache token names (see stat_token) is still as it was.
    try:
        return stat_token(Path(token.rsplit("|", 3)[0])) == token
    except OSError:
        return False


def user_summaries_path() -> Path:
    """Where planning keeps module summaries: one file per user (``$LESIONFLOW_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/lesionflow``, else ``~/.cache/lesionflow``), so that a new project's first
    plan does not parse the whole package again. Entries are keyed on each file's path, size, time
    and inode, so checkouts and versions never mix."""
    folder = os.environ.get("LESIONFLOW_CACHE_DIR")
    if not folder:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lesionflow"
    return Path(folder) / "module-summaries.json"


@dataclass(frozen=True)
class CodeBase:
    """Where a stage's code is read from: the lesionflow package jobs import, and the workflow
    folder holding scripts/ and notebooks/; module summaries are cached in ``summaries``."""

    package_root: Path
    workflow_root: Path
    summaries: ModuleSummaries = field(default_factory=ModuleSummaries, compare=False, repr=False)
    # Planning asks for the same modules' files and imports for each of the ~20 stages: looked up
    # once per plan (a stat per candidate file, a summary per module) instead of once per stage.
    _files: dict[str, Path | None] = field(default_factory=dict, compare=False, repr=False)
    _imported: dict[str, set[str]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def installed(cls, workflow_root: str | Path, cache: str | Path | None = None) -> CodeBase:
        """The lesionflow package this interpreter imports (installed or editable) and a workflow;
        with ``cache``, a JSON file keeping each module's summary between runs."""
        summaries = ModuleSummaries(Path(cache) if cache is not None else None)
        return cls(Path(lesionflow.__file__).resolve().parent, Path(workflow_root).resolve(), summaries)

    def module_file(self, name: str) -> Path | None:
        """The file of module ``name`` (a package's ``__init__.py``), or None if it is no module."""
        if name not in self._files:
            self._files[name] = self._find_module_file(name)
        return self._files[name]

    def _find_module_file(self, name: str) -> Path | None:
        parts = name.split(".")
        if parts[0] != PACKAGE:
            return None
        base = self.package_root.joinpath(*parts[1:])
        for candidate in (base.with_suffix(".py") if parts[1:] else None, base / "__init__.py"):
            if candidate is not None and candidate.is_file():
                return candidate
        return None

    def _modules_named(self, source: str) -> set[str]:
        return self._modules_of(imported_names(source))

    def _modules_of(self, names) -> set[str]:
        modules = set()
        for name in names:
            if self.module_file(name) is None:
                continue  # an attribute, such as a function or a class
            parts = name.split(".")
            # Importing a.b.c runs the packages a and a.b first.
            modules.update(".".join(parts[: i + 1]) for i in range(len(parts)))
        return modules

    def module_closure(self, sources: list[str]) -> list[str]:
        """Every lesionflow module that ``sources`` import, transitively, sorted."""
        seen: set[str] = set()
        todo = [m for source in sources for m in self._modules_named(source)]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo.extend(self._modules_imported_by(name))
        return sorted(seen)

    def _modules_imported_by(self, name: str) -> set[str]:
        if name not in self._imported:
            imports = self.summaries.summary(self.module_file(name))["imports"]
            self._imported[name] = self._modules_of(imports)
        return self._imported[name]

    def _entry(self, stage: str) -> tuple[dict[str, str], list[str]]:
        # What a stage's job starts from (its script and, for notebook stages, the notebook's code
        # cells): as fingerprint parts, and as the Python whose imports are followed.
        entry = STAGES[stage]
        script = self.workflow_root / entry.script_path
        if not script.is_file():
            raise LesionflowError(f"stage {stage}: entry point {script} is missing")
        source = script.read_text()
        parts, python = {entry.script_path: normalised_code(source)}, [source]
        if entry.notebook_path:
            cells = _notebook_cells(self.workflow_root / entry.notebook_path)
            parts[entry.notebook_path] = json.dumps(cells)
            python += [_python_lines(cell) for cell in cells]
        return parts, python

    def stage_modules(self, stage: str) -> list[str]:
        """The lesionflow modules a stage executes, as dotted names."""
        return self.module_closure(self._entry(stage)[1])

    def stage_sources(self, stage: str) -> dict[str, str]:
        """The code a stage executes, by file (paths relative to their roots): its entry point's and
        notebook's normalised code, and the digest of each module's."""
        parts, python = self._entry(stage)
        for name in self.module_closure(python):
            path = self.module_file(name)
            relative = path.relative_to(self.package_root.parent).as_posix()
            parts[relative] = self.summaries.summary(path)["code"]
        return parts

    def fingerprint(self, stage: str) -> str:
        """Hash of the code ``stage`` executes, blind to comments, docstrings and formatting."""
        return digest(self.stage_sources(stage), length=32)

    def fingerprints(self) -> dict[str, str]:
        """Every stage's code fingerprint, by stage (the module summaries saved for the next run)."""
        found = {stage: self.fingerprint(stage) for stage in STAGES}
        self.summaries.save()
        return found

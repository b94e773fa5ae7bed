"""A sortable, self-contained HTML leaderboard of every run, with the settings that differ as columns.

Must never show an undefined value as a number, fetch anything from outside the page, or put a text
cell into the page unescaped: run names and settings are user input.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lesionflow.evaluation.leaderboard_columns import is_baseline
from lesionflow.evaluation.run_groups import group_summary
from lesionflow.pipeline.artifacts import write_text
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.labels import METRIC_NAMES
from lesionflow.reports.run_settings_table import run_groups

RunSettings = Mapping[str, Mapping[str, Any]]  # run -> {dotted key: value} (differing_settings)

UNDEFINED = "—"
REQUIRED_COLUMNS = ("run", "status")
# Columns shown as they are, after group, when the leaderboard has them.
PLAIN_COLUMNS = ("seed", "fold", "predictions")

STYLE = """<style>
.lf-board{border-collapse:collapse;font:13px/1.35 system-ui,sans-serif;margin:.5em 0}
.lf-board caption{font-weight:600;text-align:left;padding:.3em 0}
.lf-board th,.lf-board td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
.lf-board th{background:#eee;cursor:pointer;user-select:none;white-space:nowrap}
.lf-board th.setting{background:#e8eef7;font-family:monospace}
.lf-board th[data-dir=asc]::after{content:" \\25B2"}
.lf-board th[data-dir=desc]::after{content:" \\25BC"}
.lf-board td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.lf-board tbody:nth-of-type(even) td{background:#f4f7fb}
.lf-board tr.failed td,.lf-board tr.excluded td{color:#8a8a8a}
.lf-board .why{font-size:11px;color:#8a8a8a;max-width:28em;white-space:normal}
.lf-board .badge{font-size:10px;border:1px solid #c60;color:#c60;border-radius:3px;padding:0 3px}
.lf-board tr.summary td{font-style:italic;border-top:2px solid #888;background:#fff8e6}
.lf-board .below-floor{color:#999;font-style:italic}.lf-board .below-floor::before{content:"\\2248 "}
.lf-legend{font:12px system-ui,sans-serif;color:#444}
</style>"""

# Defined once per page however many boards it embeds; a notebook output may hold several.
SCRIPT = """<script>
window.lesionflowSort = window.lesionflowSort || function (th) {
  const table = th.closest("table"), heads = Array.from(th.parentNode.children);
  const col = heads.indexOf(th), numeric = th.dataset.kind === "num";
  const sign = th.dataset.dir === "asc" ? -1 : 1;
  heads.forEach((h) => delete h.dataset.dir);
  th.dataset.dir = sign > 0 ? "asc" : "desc";
  const key = (row) => {
    const cell = row.children[col];
    if (!cell) return null;
    if (numeric) { const x = parseFloat(cell.dataset.num); return isNaN(x) ? null : x; }
    const t = (cell.dataset.text !== undefined ? cell.dataset.text : cell.textContent).trim();
    return t === "" ? null : t;
  };
  // Undefined (null) sorts last whichever the direction; ties keep their order.
  const compare = (a, b) => (a === null || b === null) ? (a === null) - (b === null)
    : sign * (numeric ? a - b : a.localeCompare(b, undefined, {numeric: true}));
  const byKey = (x, y) => compare(x.key, y.key) || x.pos - y.pos;
  const groups = Array.from(table.tBodies, (body, pos) => {
    const summary = body.querySelector("tr.summary");
    const members = Array.from(body.rows).filter((r) => r !== summary)
      .map((row, i) => ({row: row, key: key(row), pos: i})).sort(byKey);
    members.forEach((m) => body.appendChild(m.row));
    if (summary) body.insertBefore(summary, body.firstChild);
    const own = summary ? key(summary) : null;
    return {body: body, key: own !== null ? own : members[0].key, pos: pos};
  });
  groups.sort(byKey).forEach((g) => table.appendChild(g.body));
};
</script>"""

LEGEND = (
    "Click a header to sort by it, again to reverse; empty and undefined values sort last. A "
    "group's rows stay together: groups are ordered by their summary row (or their one run).",
    f"Metrics: point value [interval]; hover for n. {UNDEFINED} is undefined, never 0.",
    "Deltas are run minus baseline; hover for the paired interval. (floor x) is the noise floor: "
    "the sd of the metric across the seeds of the run's group. A delta in grey italics with "
    "\u2248 is smaller than its floor: not distinguishable from seed-to-seed noise.",
    "Grey rows are failed or excluded runs, with the reason (and, for a failed run, the stage "
    "that failed and its log).",
    "Summary rows (shaded, italic): mean \u00b1 sd (ddof=1) of each metric over the ranked runs "
    "of a group of two or more runs where it is defined; excluded and failed runs are left out.",
)


@dataclass(frozen=True)
class Column:
    """One column of the board: its header, how it sorts, and its cell in run and summary rows."""

    label: str
    kind: str  # "num" or "text": how the column sorts
    title: str
    cell: Callable[[pd.Series], str]
    summary: Callable[[pd.DataFrame], str]
    cls: str = ""


def _undefined(value: Any) -> bool:
    # None, NaN and pandas' NA: what a table must show as undefined, never as a number.
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def plain_number(value: Any) -> str:
    """A count or setting as written: whole numbers without decimals (a seed read back as 3.0 is
    3), others to 6 significant digits; '' when undefined."""
    if _undefined(value):
        return ""
    x = float(value)
    return str(int(x)) if x.is_integer() else f"{x:.6g}"


def number_text(value: Any, signed: bool = False) -> str:
    """A number as short text (3 decimals, or 3 significant digits when very small or large);
    ``—`` when undefined."""
    if _undefined(value):
        return UNDEFINED
    x = float(value)
    sign = "+" if signed else ""
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:{sign}.3f}"
    return f"{x:{sign}.3g}"


def _raw(value: Any) -> str:
    # The raw number the sort reads; empty for undefined (sorted last).
    return "" if _undefined(value) else repr(float(value))


def _text(value: Any) -> str:
    return "" if _undefined(value) else str(value)


def _td(inner: str, num: Any = None, sort_text: str | None = None, title: str = "", cls: str = "") -> str:
    """A <td>; ``inner`` is HTML already escaped, every attribute is escaped here."""
    attrs = ""
    if num is not None:
        attrs += f' data-num="{html.escape(_raw(num))}"'
        cls = f"num {cls}".strip()
    if sort_text is not None:
        attrs += f' data-text="{html.escape(sort_text)}"'
    if title:
        attrs += f' title="{html.escape(title)}"'
    if cls:
        attrs += f' class="{html.escape(cls)}"'
    return f"<td{attrs}>{inner}</td>"


def _get(row: pd.Series, column: str) -> Any:
    return row[column] if column in row.index else None


# ---------------------------------------------------------------- columns


def _blank(_: pd.DataFrame) -> str:
    return _td("")


def _run_column() -> Column:
    def cell(row: pd.Series) -> str:
        inner = html.escape(str(row["run"]))
        if row["_baseline"]:
            inner += ' <span class="badge">baseline</span>'
        if _text(_get(row, "tags")):
            inner += f'<div class="why">tags: {html.escape(_text(row["tags"]))}</div>'
        return _td(inner, sort_text=str(row["run"]))

    def summary(members: pd.DataFrame) -> str:
        group = members["_group"].iloc[0]
        label = f"summary of group {group}: mean \u00b1 sd of {len(members)} runs"
        return _td(f"<b>{html.escape(label)}</b>", sort_text=group)

    return Column("run", "text", "run name; the baseline is marked", cell, summary)


def _status_column() -> Column:
    def cell(row: pd.Series) -> str:
        inner = html.escape(_text(row["status"]))
        if _text(_get(row, "status_reason")):
            inner += f'<div class="why">{html.escape(_text(row["status_reason"]))}</div>'
        stage, log = _text(_get(row, "failed_stage")), _text(_get(row, "log"))
        if stage or log:
            where = (f"stage {stage}" if stage else "") + (", " if stage and log else "")
            where = html.escape(where) + (f"log <code>{html.escape(log)}</code>" if log else "")
            inner += f'<div class="why failed-at">failed at {where}</div>'
        return _td(inner, sort_text=_text(row["status"]))

    def summary(members: pd.DataFrame) -> str:
        counts = members["status"].astype(str).value_counts(sort=False)
        return _td(html.escape(", ".join(f"{n} {status}" for status, n in counts.items())), sort_text="")

    return Column("status", "text", "ranked, excluded or failed, with the reason", cell, summary)


def _metric_column(metric: str, summaries: pd.DataFrame) -> Column:
    def cell(row: pd.Series) -> str:
        value = row[metric]
        low, high = _get(row, f"{metric}_ci_low"), _get(row, f"{metric}_ci_high")
        text = number_text(value)
        if not _undefined(value) and f"{metric}_ci_low" in row.index:
            text += f" [{number_text(low)}, {number_text(high)}]"
        n = _get(row, f"{metric}_n") if f"{metric}_n" in row.index else _get(row, "n")
        title = "n not recorded" if n is None else f"n = {plain_number(n) or UNDEFINED}"
        return _td(html.escape(text), num=value, title=title)

    def summary(members: pd.DataFrame) -> str:
        stats = summaries.loc[members["_group"].iloc[0]]
        mean, sd, k = stats[f"{metric}_mean"], stats[f"{metric}_sd"], int(stats[f"{metric}_n"])
        text = UNDEFINED if _undefined(mean) else f"{number_text(mean)} \u00b1 {number_text(sd)}"
        title = f"mean \u00b1 sd (ddof=1) over {k} of the group's {len(members)} runs (ranked, defined)"
        return _td(html.escape(text), num=mean, title=title)

    return Column(metric, "num", METRIC_NAMES.get(metric, metric), cell, summary)


def delta_columns(table: pd.DataFrame, metric: str) -> tuple[str | None, str | None, str | None]:
    """(difference to the baseline, its interval's low and high) columns of ``metric`` in a
    segmentation (``delta_<m>_vs_baseline``, ``paired_delta_<m>_ci_*``) or regression
    (``delta_<m>``, ``delta_<m>_ci_*``) leaderboard; None for those it lacks."""
    value = next((c for c in (f"delta_{metric}_vs_baseline", f"delta_{metric}") if c in table), None)
    for prefix in (f"paired_delta_{metric}", f"delta_{metric}"):
        if f"{prefix}_ci_low" in table and f"{prefix}_ci_high" in table:
            return value, f"{prefix}_ci_low", f"{prefix}_ci_high"
    return value, None, None


def _delta_column(table: pd.DataFrame, metric: str) -> Column | None:
    value_column, low_column, high_column = delta_columns(table, metric)
    if value_column is None:
        return None
    floor_column = f"noise_floor_{metric}"

    def cell(row: pd.Series) -> str:
        delta = row[value_column]
        text, notes, cls = number_text(delta, signed=True), ["run minus baseline"], ""
        if low_column:
            interval = f"[{number_text(row[low_column], True)}, {number_text(row[high_column], True)}]"
            notes.append(f"interval {interval}")
        pct = _get(row, f"delta_{metric}_pct_vs_baseline")
        if pct is not None and not _undefined(pct):
            notes.append(f"{float(pct):+.1f}% of the baseline")
        if floor_column in row.index:
            floor = row[floor_column]
            text += f" (floor {number_text(floor)})"
            seeds = plain_number(_get(row, f"{floor_column}_n")) or "an unrecorded number of"
            source = _text(_get(row, "noise_floor_source")) or "the run's group"
            notes.append(f"noise floor from {seeds} values ({source})")
            if not _undefined(delta) and not _undefined(floor) and abs(delta) < floor:
                cls = "below-floor"
                notes.append("smaller than the noise floor")
        return _td(html.escape(text), num=delta, title="; ".join(notes), cls=cls)

    return Column(f"\u0394 {metric}", "num", f"{metric}: run minus baseline", cell, _blank)


def _plain_column(table: pd.DataFrame, name: str, label: str, cls: str = "") -> Column:
    """A column shown as it is (seed, fold, a setting); numeric when every defined value is."""
    defined = [v for v in table[name] if not _undefined(v)]
    numeric = bool(defined) and all(
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)
        for v in defined
    )

    def shown(value: Any) -> str:
        return plain_number(value) if numeric else _text(value)

    def cell(row: pd.Series) -> str:
        value = row[name]
        text = html.escape(shown(value))
        return _td(text, num=value, cls=cls) if numeric else _td(text, sort_text=_text(value), cls=cls)

    def summary(members: pd.DataFrame) -> str:
        # A value the whole group shares is shown; one that differs within it is left empty.
        values = {repr(v) for v in members[name]}
        if len(values) != 1 or _undefined(members[name].iloc[0]):
            return _td("", num=math.nan) if numeric else _td("", sort_text="")
        return cell(members.iloc[0])

    return Column(label, "num" if numeric else "text", name, cell, summary, cls)


def _mean_rank_column() -> Column:
    def cell(row: pd.Series) -> str:
        return _td(html.escape(number_text(row["mean_rank"])), num=row["mean_rank"])

    return Column("mean rank", "num", "mean of the ranks among ranked runs (1 = best)", cell, _blank)


def board_columns(table: pd.DataFrame, metrics: Sequence[str], summaries: pd.DataFrame) -> list[Column]:
    """The columns of the board, in order: run, group, seed, fold, status, metrics, deltas to the
    baseline, mean rank, then the settings (``setting:<key>`` columns of ``table``)."""
    columns = [_run_column()]
    columns += [_plain_column(table, name, name) for name in ("group", *PLAIN_COLUMNS) if name in table]
    columns.append(_status_column())
    columns += [_metric_column(metric, summaries) for metric in metrics]
    columns += [c for c in (_delta_column(table, metric) for metric in metrics) if c is not None]
    if "mean_rank" in table:
        columns.append(_mean_rank_column())
    settings = [c for c in table.columns if str(c).startswith("setting:")]
    columns += [_plain_column(table, c, c.removeprefix("setting:"), "setting") for c in settings]
    return columns


# ---------------------------------------------------------------- the page


def _checked(table: pd.DataFrame, settings: RunSettings, metrics: Sequence[str]) -> pd.DataFrame:
    """``table`` with the settings joined by run (``setting:<key>``) and the helper columns the
    cells read; raises when a required or metric column is missing."""
    missing = [c for c in (*REQUIRED_COLUMNS, *metrics) if c not in table]
    if missing:
        raise LesionflowError(f"leaderboard table lacks columns {missing}; it has {list(table.columns)}")
    board = table.reset_index(drop=True)
    runs = board["run"].astype(str)
    frame = pd.DataFrame.from_dict(dict(settings), orient="index", dtype=object)
    aligned = frame.reindex(runs.to_numpy()).astype(object)
    aligned = aligned.where(aligned.notna(), None)
    for key in aligned.columns:
        board[f"setting:{key}"] = aligned[key].to_numpy()
    board["_baseline"] = is_baseline(board)
    board["_group"] = run_groups(board).to_numpy()
    return board


def _row_html(row: pd.Series, columns: Sequence[Column]) -> str:
    classes = [_text(row["status"])] + (["baseline"] if row["_baseline"] else [])
    cells = "".join(column.cell(row) for column in columns)
    return f'<tr class="{html.escape(" ".join(classes))}">{cells}</tr>'


def _group_html(members: pd.DataFrame, columns: Sequence[Column]) -> str:
    rows = [_row_html(row, columns) for _, row in members.iterrows()]
    if len(members) >= 2:
        cells = "".join(column.summary(members) for column in columns)
        rows.insert(0, f'<tr class="summary">{cells}</tr>')
    return "<tbody>" + "".join(rows) + "</tbody>"


def _header_html(column: Column) -> str:
    cls = f' class="{column.cls}"' if column.cls else ""
    return (
        f'<th data-kind="{column.kind}" title="{html.escape(column.title)}"{cls} tabindex="0" '
        'onclick="lesionflowSort(this)" onkeydown="if(event.key===\'Enter\')lesionflowSort(this)">'
        f"{html.escape(column.label)}</th>"
    )


def leaderboard_html(table: pd.DataFrame, settings: RunSettings, metrics: Sequence[str], title: str) -> str:
    """One self-contained HTML fragment (inline style and script, nothing fetched) of ``table``, a
    leaderboard.csv or leaderboard_regression.csv read as a DataFrame.

    One row per run, the rows of a group (``group`` column; else each run alone) together, with a
    summary row (mean ± sd of each of ``metrics``) before a group of two or more runs; ``settings``
    (run name -> setting columns, e.g. :func:`differing_settings`) adds its columns at the end.
    Headers sort on click. Works alone in a browser and as a notebook's ``IPython.display.HTML``.
    """
    board = _checked(table, settings, metrics)
    # The mean ± sd rows are the compare stage's leaderboard_groups.csv, computed the one same way.
    summaries = group_summary(board.assign(group=board["_group"]), metrics).set_index("group")
    columns = board_columns(board, metrics, summaries)
    groups = board.groupby("_group", sort=False)
    body = "".join(_group_html(members, columns) for _, members in groups)
    header = "<thead><tr>" + "".join(_header_html(c) for c in columns) + "</tr></thead>"
    legend = "".join(f"<li>{html.escape(line)}</li>" for line in LEGEND)
    return (
        f'<div class="lf-board-wrap">{STYLE}<table class="lf-board">'
        f"<caption>{html.escape(title)}</caption>{header}{body}</table>"
        f'<ul class="lf-legend">{legend}</ul>{SCRIPT}</div>'
    )


def leaderboard_page(table: pd.DataFrame, settings: RunSettings, metrics: Sequence[str], title: str) -> str:
    """:func:`leaderboard_html` as a whole HTML document, to open in a browser without a network."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n"
        f"{leaderboard_html(table, settings, metrics, title)}\n</body></html>\n"
    )


def write_leaderboard_html(
    table: pd.DataFrame,
    settings: RunSettings,
    metrics: Sequence[str],
    title: str,
    path: str | os.PathLike,
) -> None:
    """Write :func:`leaderboard_page` to ``path`` atomically."""
    write_text(path, leaderboard_page(table, settings, metrics, title))

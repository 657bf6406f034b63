"""Rich tables of results: classification reports, comparisons, label counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def topk_label(report: Mapping[str, Any]) -> str:
    """The row name of a report's "top5" value: top-min(5, classes), as ``top5_k`` records."""
    return f"top-{report.get('top5_k', 5)}"


def classification_table(report: Mapping[str, Any], title: str) -> Table:
    """Per-class rows for a ``metrics.classification_report`` dict, then the overall numbers."""
    table = Table(title=escape(title))
    table.add_column("class")
    table.add_column("n", justify="right")
    table.add_column("accuracy %", justify="right")
    for i, entry in enumerate(report["per_class"]):
        last = i == len(report["per_class"]) - 1
        table.add_row(escape(str(entry["name"])), str(entry["n"]), _percent(entry["accuracy"]), end_section=last)
    table.add_row("[bold]top-1[/bold]", str(report["n"]), f"[bold]{_percent(report['top1'])}[/bold]")
    table.add_row(topk_label(report), "", _percent(report["top5"]))
    table.add_row("mean per-class recall", "", _percent(report["mean_per_class_recall"]))
    return table


def comparison_table(rows: Mapping[str, Mapping[str, Any]], class_names: Sequence[str]) -> Table:
    """Several methods side by side: one column per method, overall rows then one row per class.

    ``rows`` maps a method name to its ``metrics.classification_report`` dict, all over the
    same classes (so the same top-k). Values are percentages; the best in each row is bold.
    """
    if not rows:
        raise ValueError("no methods to compare")
    methods = list(rows)
    topk_labels = {topk_label(report) for report in rows.values()}
    if len(topk_labels) > 1:
        raise ValueError(f"methods scored with different top-k ({', '.join(sorted(topk_labels))}) cannot share a row")
    table = Table(title="comparison")
    table.add_column("")
    for method in methods:
        table.add_column(escape(method), justify="right")

    def add(label: str, values: list[float | None], end_section: bool = False) -> None:
        known = [value for value in values if value is not None]
        best = max(known) if known else None
        cells = [
            f"[bold]{_percent(v)}[/bold]" if v is not None and v == best and len(known) > 1 else _percent(v)
            for v in values
        ]
        table.add_row(escape(label), *cells, end_section=end_section)

    add("top-1", [rows[m]["top1"] for m in methods])
    add(topk_labels.pop(), [rows[m]["top5"] for m in methods])
    add("mean per-class recall", [rows[m]["mean_per_class_recall"] for m in methods], end_section=True)
    accuracy_by_class = {m: {entry["name"]: entry["accuracy"] for entry in rows[m]["per_class"]} for m in methods}
    for name in class_names:
        add(str(name), [accuracy_by_class[m].get(str(name)) for m in methods])
    return table


def label_counts_table(counts: Mapping[str, int], title: str) -> Table:
    """How many images each label got (after `classify` or `probe apply`), with shares and a total."""
    total = sum(counts.values())
    table = Table(title=title)
    for column, justify in (("label", "left"), ("images", "right"), ("%", "right")):
        table.add_column(column, justify=justify)
    for label, count in counts.items():
        table.add_row(escape(label), str(count), f"{100 * count / max(total, 1):.1f}")
    table.add_row("[bold]total[/bold]", f"[bold]{total}[/bold]", "", end_section=True)
    return table


ELLIPSIS = "…"
_BORDER = 3  # a column's share of a boxed table's rules and padding ("│ " + " ")


def elide_middle(path: str, width: int) -> str:
    """`path` in at most `width` characters, cut in the middle: its start and its end stay, and the file
    name is never cut (a name longer than `width` is kept whole: the table folds it)."""
    if len(path) <= width:
        return path
    name = path.rsplit("/", 1)[-1]
    budget = max(width - 1, 0)
    tail = max(len(name), budget - budget // 3)  # the end of a path says more than its start
    head = max(budget - tail, 0)
    return path[:head] + ELLIPSIS + path[-tail:]


def fitted_table(
    title: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[str]],
    width: int,
    elide: str | None = None,
) -> Table:
    """A results table for a console `width` wide: columns (name, justify) whose cells are all empty are
    dropped, the `elide` column (a path) is cut in the middle to fit the rest, and the title gets the whole
    width rather than wrapping over lines in a narrow table. Cells are plain text (no markup)."""
    keep = [i for i, _ in enumerate(columns) if any(row[i] for row in rows)] if rows else list(range(len(columns)))
    names = [columns[i][0] for i in keep]
    table = Table(title=escape(title), min_width=min(len(title) + 4, width))
    for i in keep:
        name, justify = columns[i]
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    cells = [[str(row[i]) for i in keep] for row in rows]
    if elide in names and cells:
        at = names.index(elide)
        others = sum(max(len(names[j]), *(len(r[j]) for r in cells)) for j in range(len(names)) if j != at)
        room = max(width - others - _BORDER * len(names) - 1, len(elide))
        for row in cells:
            row[at] = elide_middle(row[at], room)
    for row in cells:
        table.add_row(*(escape(cell) for cell in row))
    return table

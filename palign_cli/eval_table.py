"""The eval table (one row per benchmark, an average row), shared by `palign eval` and
`palign run`, which ends every run with it, read back from the summary."""

from __future__ import annotations

from typing import Any


def print_table(table: Any) -> None:
    """On a terminal, at its width; piped or logged stderr has no width of its own, so give
    the table room there instead of rich's default 80 columns."""
    from rich.console import Console

    from palign_cli import console

    out = console.err if console.err.is_terminal else Console(stderr=True, highlight=False, width=200, emoji=False)
    out.print(table)


def build_table(rows: list[dict[str, Any]], avg: dict[str, Any], count_cut: str | None = None):
    """One row per benchmark and an average row, like the paper's Table 1 (scores in %).

    `flipped`: labels the second opinion turned right (`flipped_by` in the summary says by
    which rule); `too long`: samples never generated (prompt did not fit), apart from `cut`
    (cut by --max-tokens), whose policy (`count_cut`) the title states."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    ks = sorted({key for r in rows for key in r if key.startswith("pass@")}, key=lambda s: int(s[5:]))
    policy = f"; cut samples count as {'credit (graded as they stand)' if count_cut == 'credit' else 'wrong'}" if count_cut else ""
    table = Table(title=f"palign eval (scores in %{policy})", title_justify="left", box=box.SIMPLE_HEAD)
    for name in ["benchmark", "problems", "samples", *ks, "acc", "cut", "too long", "tokens", "timeouts", "flipped", "maybe FN", "bad gold"]:
        if name == "benchmark":  # long file names fold rather than lose their ends
            longest = max(len(r["name"]) for r in rows + [avg])
            table.add_column(name, overflow="fold", min_width=min(longest, 24))
        else:
            table.add_column(name, justify="right", min_width=5)
    shown = rows + [avg] if len(rows) > 1 else rows
    for i, r in enumerate(shown):
        table.add_row(
            Text(r["name"]), str(r["n_problems"]), str(r["n_samples"]),
            *(_pct(r.get(key)) for key in ks),
            _pct(r["mean_acc"]), _pct(r["truncated_share"]), _count(r.get("prompt_too_long")),
            "-" if r["mean_output_tokens"] is None else f"{r['mean_output_tokens']:.0f}",
            str(r["timeouts"]), _count(r.get("flipped")), str(r["possible_false_negatives"]), str(r["ungradable_golds"]),
            end_section=i == len(rows) - 1,
        )
    return table


def _count(value: int | None) -> str:
    """Counts added after the first summaries were written read as "-" in those."""
    return "-" if value is None else str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


# What build_table reads of each summary row (besides the pass@K columns).
TABLE_FIELDS = ("name", "n_problems", "n_samples", "mean_acc", "truncated_share", "mean_output_tokens",
                "timeouts", "possible_false_negatives", "ungradable_golds")


def read_summary(path: str) -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
    """The rows, the average and the count-cut policy of an eval `--summary` file, checked:
    `palign run` ends with this table even when nothing was left to run, so the file is read
    back, not remembered."""
    import orjson

    from palign_cli.errors import InputError

    try:
        with open(path, "rb") as f:
            data = orjson.loads(f.read())
    except OSError as exc:
        raise InputError(path, None, f"cannot be read ({exc.strerror})") from None
    except orjson.JSONDecodeError as exc:
        raise InputError(path, None, f"is not valid JSON ({exc}); delete it and rerun to grade again") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict) or not isinstance(data.get("average"), dict):
        raise InputError(path, None, "is not an eval summary (expected an object with 'files' and 'average')")
    rows = list(data["files"].values())
    for where, row in [*((f"files.{k}", v) for k, v in data["files"].items()), ("average", data["average"])]:
        if not isinstance(row, dict):
            raise InputError(path, None, "is not an object", field=where)
        missing = [k for k in TABLE_FIELDS if k not in row]
        if missing:
            raise InputError(path, None, f"lacks {', '.join(missing)} (written by another palign version?)", field=where)
    config = data.get("config")
    count_cut = config.get("count_cut") if isinstance(config, dict) else None
    return rows, data["average"], count_cut if isinstance(count_cut, str) else None

"""`palign report`: a self-contained HTML page about a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

NAME = "report"


def command(
    run_dir: Annotated[str, typer.Argument(help="A `palign run` directory.")],
    output: Annotated[str | None, typer.Option("-o", "--output", help="HTML file [default: RUN_DIR/report.html].")] = None,
) -> None:
    """Write one HTML page with the run's plots embedded: prefix ratios, judge calls,
    sufficiency curves, verified share, training loss and pass@k."""
    from palign_cli import console
    from palign_cli.errors import BackendUnavailable, PalignError, UsageError
    from palign_cli.report import check_run_dir

    if not Path(run_dir).is_dir():
        raise UsageError(f"{run_dir}: not a directory")
    check_run_dir(Path(run_dir))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BackendUnavailable("palign report needs matplotlib: pip install 'palign[report]'") from None
    from palign_cli.report import build_report

    out = Path(output or Path(run_dir) / "report.html")
    page = build_report(run_dir)
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise PalignError(f"{out}: cannot write the report ({exc.strerror})") from None
    console.info(f"report written to {out}")

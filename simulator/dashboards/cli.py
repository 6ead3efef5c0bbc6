"""`iotsim dashboards`: regenerate the Grafana boards, or check the committed ones are current."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simulator.dashboards import JSON_DIR

dashboards_app = typer.Typer(no_args_is_help=True, help="Grafana dashboards as code (simulator/dashboards/ → dashboards/json/).")


@dashboards_app.callback()
def dashboards() -> None:
    """Grafana dashboards as code (simulator/dashboards/ → dashboards/json/)."""


@dashboards_app.command("build")
def build(
    check: Annotated[bool, typer.Option("--check", help="write nothing; exit 1 naming each JSON file that is missing or stale")] = False,
    out: Annotated[Path, typer.Option("--out", help="directory of the dashboard JSON files")] = JSON_DIR,
) -> None:
    """Write dashboards/json/*.json from the generator (or, with --check, compare them)."""
    from simulator.dashboards.build import stale, write  # the SDK and the boards: only this command needs them
    if check:
        problems = stale(out)
        for problem in problems:
            typer.echo(problem, err=True)
        if problems:
            raise typer.Exit(1)
        typer.echo(f"{out}: dashboards are up to date")
        return
    for path in write(out):
        typer.echo(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover - `python -m simulator.dashboards.cli`
    dashboards_app()

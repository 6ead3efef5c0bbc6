"""A results directory per experiment: summary.json, timeseries.csv, PNG plots and report.html.

report.html is self-contained (the plots are embedded as data: URIs), so it can be mailed or
attached to a ticket as one file.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from simulator.load.metrics import Server
from simulator.load.thresholds import format_figure

PLOTS = ("rates.png", "latency.png", "loss.png", "resources.png")


def write_results(out: Path, summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_timeseries(out / "timeseries.csv", rows)
    plot_rates(out / "rates.png", rows)
    plot_latency(out / "latency.png", rows)
    plot_loss(out / "loss.png", rows, summary)
    plot_resources(out / "resources.png", rows, summary.get("servers", {}))
    (out / "report.html").write_text(report_html(out, summary, rows))


def write_timeseries(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else ["second"])
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)


def column(rows: list[dict[str, Any]], name: str) -> list[float]:
    return [float("nan") if row.get(name) is None else row[name] for row in rows]


def pyplot() -> ModuleType:
    """matplotlib.pyplot, imported when the first plot is drawn: importing it takes about a third of a
    second, which every iotsim command (the bridge's start included) would otherwise pay."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def figure(title: str, ylabel: str) -> tuple[Any, Any]:
    fig, axes = pyplot().subplots(figsize=(9, 3.6), dpi=100)
    axes.set_title(title)
    axes.set_xlabel("seconds since start")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return fig, axes


def save(fig: Any, axes: Any, path: Path) -> None:
    axes.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)


def plot_rates(path: Path, rows: list[dict[str, Any]]) -> None:
    fig, axes = figure("offered vs achieved rate", "messages/s")
    seconds = column(rows, "second")
    axes.plot(seconds, column(rows, "offered"), label="offered", color="black", linestyle="--")
    for name, color in (("published", "tab:blue"), ("acknowledged", "tab:cyan"), ("received", "tab:orange"), ("written", "tab:green")):
        axes.plot(seconds, column(rows, name), label=name, color=color)
    save(fig, axes, path)


def plot_latency(path: Path, rows: list[dict[str, Any]]) -> None:
    fig, axes = figure("end-to-end latency (device time → written to InfluxDB), per second", "ms")
    seconds = column(rows, "second")
    for name in ("p50", "p90", "p99", "max"):
        axes.plot(seconds, column(rows, f"latency_{name}_ms"), label=name, marker=".")
    axes.plot(seconds, column(rows, "publish_p99_ms"), label="publish p99", linestyle=":", color="gray")
    axes.set_yscale("log")
    save(fig, axes, path)


def plot_loss(path: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    loss = summary["figures"].get("loss")
    fig, axes = figure(f"not (yet) written: published − written; final loss {format_figure(loss if loss is not None else float('nan'))}", "messages")
    axes.plot(column(rows, "second"), column(rows, "backlog"), label="backlog", color="tab:red")
    axes.plot(column(rows, "second"), column(rows, "duplicates"), label="duplicates written", color="tab:purple")
    save(fig, axes, path)


RESOURCE_COLORS = {"simulator": "tab:blue", "bridge": "tab:orange", "broker": "tab:green", "database": "tab:red"}


def plot_resources(path: Path, rows: list[dict[str, Any]], servers: dict[str, Any]) -> None:
    fig, axes = figure("CPU (100% = one core) and resident memory", "% of a core")
    seconds = column(rows, "second")
    memory = axes.twinx()
    memory.set_ylabel("MB")
    for name, color in RESOURCE_COLORS.items():
        if all(row.get(f"{name}_cpu_percent") is None for row in rows):
            continue  # not sampled (a server elsewhere): no line rather than a line at zero
        process = servers.get(name, {}).get("process")
        label = f"{name} ({process})" if process else name
        axes.plot(seconds, column(rows, f"{name}_cpu_percent"), label=f"{label} CPU", color=color)
        memory.plot(seconds, column(rows, f"{name}_rss_mb"), color=color, linestyle=":", label=f"{label} RSS")
    axes.plot(seconds, column(rows, "machine_cpu_percent"), label="machine CPU (every process)", color="black", linestyle="--")
    memory.legend(loc="upper right", fontsize="small")
    save(fig, axes, path)


def figure_text(name: str, value: float | None, servers: dict[str, Any]) -> str:
    """A figure as the report shows it; a server's unsampled figure says why it was not sampled."""
    server = servers.get(name.split("_")[0], {})
    if value is None and server.get("note"):
        return server["note"]
    return format_figure(value if value is not None else float("nan"))


def report_html(out: Path, summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    escape = html.escape
    verdicts = "".join(
        f"<tr class={'pass' if v['passed'] else 'fail'}><td>{'pass' if v['passed'] else 'FAIL'}</td><td><code>{escape(v['threshold'])}</code></td>"
        f"<td>{format_figure(v['measured'] if v['measured'] is not None else float('nan'))}</td>"
        f"<td>{format_figure(v['limit'] if v['limit'] is not None else float('nan'))}</td></tr>"
        for v in summary.get("thresholds", [])
    )
    servers = summary.get("servers", {})
    figures = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(figure_text(name, value, servers))}</td></tr>" for name, value in summary["figures"].items()
    )
    sampled = "".join(f"<li>{escape(name)}: {escape(Server(**server).describe())}</li>" for name, server in servers.items())
    inputs = escape(json.dumps(summary["inputs"], indent=2))
    environment = escape(json.dumps(summary["environment"], indent=2))
    images = "".join(
        f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode((out / name).read_bytes()).decode()}">' for name in PLOTS
    )
    verdict = "PASSED" if summary.get("passed") else "FAILED"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(summary['scenario'])} load test {escape(summary['run'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 960px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
tr.pass td:first-child {{ color: #1a7f37; font-weight: bold; }} tr.fail td:first-child {{ color: #cf222e; font-weight: bold; }}
img {{ max-width: 100%; display: block; margin: 1em 0; }} pre {{ background: #f6f8fa; padding: 1em; overflow-x: auto; }}
.verdict {{ font-size: 1.4em; font-weight: bold; color: {'#1a7f37' if summary.get('passed') else '#cf222e'}; }}
</style></head><body>
<h1>Load test: {escape(summary['scenario'])}</h1>
<p>Run <code>{escape(summary['run'])}</code>, started {escape(summary['started'])}, {len(rows)} seconds recorded.</p>
<p class="verdict">{verdict}</p>
<h2>Thresholds</h2><table><tr><th></th><th>threshold</th><th>measured</th><th>limit</th></tr>{verdicts}</table>
<h2>Plots</h2>{images}
<h2>Figures</h2><table>{figures}</table>
<p>CPU in % of one core (200 = two cores busy); the servers' processes, found by the port they listen on:</p><ul>{sampled}</ul>
<h2>Inputs</h2><pre>{inputs}</pre>
<h2>Environment</h2><pre>{environment}</pre>
<p>Per-second figures: timeseries.csv; everything above: summary.json.</p>
</body></html>
"""

"""Rich rendering of reports (stdout). Presentation only: no computation here."""

from __future__ import annotations

from rich import box
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from zsad_cli.app import out_console

STATUS_STYLE = {"good": "bold green", "warning": "bold yellow", "bad": "bold red"}


def fmt(value, spread=None, digits=4) -> str:
    if value is None:
        return "—"
    text = f"{value:.{digits}g}"
    return f"{text} ± {spread:.2g}" if spread is not None else text


def _bar(value, top: float, width: int = 24) -> Text:
    if value is None or top <= 0:
        return Text("")
    n = max(1, round(width * min(value, top) / top))
    return Text("█" * n, style="cyan")


def render_score(doc: dict) -> None:
    nlc = doc["nlc"]
    verdict = doc["verdict"]
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("parameters", f"{doc['params']:,}")
    per_seed = ", ".join(fmt(v, digits=4) for v in nlc["per_seed"])
    nlc_text = fmt(nlc["mean"], nlc["std"]) if nlc["mean"] is not None else f"undefined ({nlc['reason']})"
    head.add_row("NLC", f"{nlc_text}   [dim](per seed: {per_seed})[/]")
    for line in doc.get("summary_rows", []):
        head.add_row(*line)
    style = STATUS_STYLE[verdict["status"]]
    head.add_row("verdict", Text(verdict["summary"], style=style))
    for reason in verdict["reasons"][1:]:
        head.add_row("", Text(f"• {reason}", style="dim"))
    options = doc["options"]
    subtitle = (f"{options['seeds']} seeds · batch {options['batch']} · {options['tangents']} tangents · "
                f"{doc['dtype']} · {doc['seconds']:.2f} s")
    out_console.print(Panel(head, title=f"[bold]{doc['name']}[/]", subtitle=subtitle, box=box.ROUNDED))

    table = Table(title="NLC profile (input → output of each layer)", box=box.SIMPLE_HEAD)
    table.add_column("layer")
    table.add_column("NLC", justify="right")
    table.add_column("")
    top = max([row["nlc"] for row in doc["profile"] if row["nlc"] is not None] or [1.0])
    for row in doc["profile"]:
        table.add_row(row["layer"], fmt(row["nlc"], row["nlc_std"]), _bar(row["nlc"], top))
    out_console.print(table)

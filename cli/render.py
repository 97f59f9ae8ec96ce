"""Rich rendering of every command's report (stdout). Presentation only: no computation here."""

from __future__ import annotations

import os

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from zsad_cli.app import err_console, out_console

STATUS_STYLE = {"good": "bold green", "unknown": "bold cyan", "warning": "bold yellow", "bad": "bold red"}


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
    if doc.get("init"):
        head.add_row("initialization", doc["init"]["summary"])
    per_seed = ", ".join(fmt(v, digits=4) for v in nlc["per_seed"])
    nlc_text = fmt(nlc["mean"], nlc["std"]) if nlc["mean"] is not None else f"undefined ({nlc['reason']})"
    head.add_row("NLC", f"{nlc_text}   [dim](per seed: {per_seed})[/]")
    spec = doc.get("spectrum")
    if spec and spec.get("sigma2_mean") is not None:
        sd = spec["std"]
        a, b = spec["between"]
        head.add_row("Jacobian", f"[dim]{a} → {b} ({spec['method']}, {spec['samples']} inputs)[/]")
        head.add_row("  mean σ²", f"{fmt(spec['sigma2_mean'], sd['sigma2_mean'])}   "
                                  f"[dim]var/mean² {fmt(spec['sigma2_ratio'], digits=3)}[/]")
        # below what the method resolves, σ_min is a bound ("< value") and the condition one too ("> value")
        below = "< " if spec.get("sigma_min_is_bound") and spec["sigma_min"] is not None else ""
        above = "> " if spec.get("condition_is_bound") and spec["condition"] is not None else ""
        condition = (fmt(spec["condition"], digits=3) if spec["condition"] is not None or "condition_reason" not in spec
                     else "∞ (singular)")
        head.add_row("  σ max / min", f"{fmt(spec['sigma_max'], digits=3)} / {below}{fmt(spec['sigma_min'], digits=3)}"
                                      f"   [dim]condition {above}{condition}[/]")
        head.add_row("  isometric", f"{100 * spec['isometry_share']:.0f}% of σ within a factor 2 of 1")
        if spec.get("plot"):
            head.add_row("  plot", spec["plot"])
    mf = doc.get("meanfield")
    if mf and mf.get("chi1") is not None:
        head.add_row("mean field", f"χ₁ = {fmt(mf['chi1'], digits=4)} ({mf['phase']}), q* = {fmt(mf['q_star'], digits=4)}, "
                                   f"ξ_c = {fmt(mf['xi_c'], digits=3)}")
        head.add_row("  NLC predicted", f"{fmt(mf['nlc_predicted'], digits=4)} (infinite width) vs measured "
                                        f"{fmt(nlc['mean'], nlc['std'])}")
    elif mf and mf.get("reason"):
        head.add_row("mean field", f"[dim]{mf['reason']}[/]")
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


# --------------------------------------------------------------------------- zsad normalize

def render_normalize(doc: dict) -> None:
    """Before/after NLC, the per-layer scalars and the mean-field phase, on stdout."""
    before, after = doc["nlc_before"], doc["nlc_after"]
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("target", f"{doc['target']:g}  [dim](method {doc['method']})[/]")
    head.add_row("NLC before", fmt(before["mean"], before["std"]))
    head.add_row("NLC after", fmt(after["mean"], after["std"]))
    mf = doc.get("meanfield") or {}
    if "before" in mf and "after" in mf:
        head.add_row("mean-field phase", f"{_phase(mf['before'])} → {_phase(mf['after'])}")
    head.add_row("solve", f"{doc['iterations']} measured iterations, {doc['seconds']:.2f} s, "
                          f"{doc['compilations']} recompilations")
    head.add_row("written", doc["output"])
    out_console.print(head)
    table = Table(box=box.SIMPLE_HEAD, title="shaping per activation layer", title_justify="left")
    for col in ("layer", "q", "alpha", "beta", "gain", "layer NLC"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for row in doc["layers"]:
        table.add_row(row["layer"], fmt(row["q"]), fmt(row["alpha"]), fmt(row["beta"]), fmt(row["gain"]),
                      f"{fmt(row['nlc_native'])} → {fmt(row['nlc_layer'])}")
    out_console.print(table)


def _phase(summary: dict) -> str:
    if not isinstance(summary, dict) or summary.get("phase") is None:
        return "—"
    chi = summary.get("chi1")
    return f"{summary['phase']} (χ₁ = {chi:.3g})" if isinstance(chi, (int, float)) else str(summary["phase"])


# --------------------------------------------------------------------------- zsad phase

def render_phase(doc: dict) -> None:
    params = ", ".join(f"{k}={v:g}" for k, v in doc["params"].items())
    table = Table(title=f"edge of chaos of {doc['activation']}{f' ({params})' if params else ''}: "
                        "χ₁(q*) = 1", box=box.SIMPLE_HEAD)
    for name in ("σ_b²", "critical σ_w²", "critical σ_w", "q*"):
        table.add_column(name, justify="right")
    for row in doc["edge_of_chaos"]:
        w = row["weight_var"]
        table.add_row(f"{row['bias_var']:.4g}", "—" if w is None else f"{w:.6f}", "—" if w is None else f"{w**0.5:.6f}",
                      _q_text(row))
    out_console.print(table)
    net = doc.get("network")
    if net:
        chi = "—" if net["chi1"] is None else f"{net['chi1']:.4g}"
        out_console.print(f"[bold]{net['name']}[/]: hidden layer {net['activation']} at σ_w² = {net['weight_var']:.4g}, "
                          f"σ_b² = {net['bias_var']:.4g}: χ₁ = {chi} ([bold]{net['phase']}[/])")
    if doc.get("plot"):
        out_console.print(f"phase diagram written to {doc['plot']}")


def _q_text(row: dict) -> str:
    if row["q_star"] is not None:
        return f"{row['q_star']:.4g}"
    return {"infinite": "∞ (diverges)", "any": "any q"}.get(row.get("q_star_kind"), "—")


# --------------------------------------------------------------------------- zsad rank

def _num(value, column: str) -> str:
    if value is None:
        return "—"
    if column in ("params", "flops"):
        for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= size:
                return f"{value / size:.3g}{unit}"
        return str(value)
    return fmt(value, digits=3)


#: The metric columns a narrow table keeps first (after those of --by); the rest follow in column order.
_PRIORITY = ("nlc", "sigma2", "params", "flops")
#: Fewest characters of an architecture name shown in a narrow table.
_NAME_MIN = 16


def _elide(name: str, width: int) -> str:
    """``name`` cut in the middle to ``width`` characters (head … tail)."""
    if len(name) <= width:
        return name
    head = width // 2
    tail = width - 1 - head
    return name[:head] + "…" + (name[-tail:] if tail else "")


def _common_affixes(names: list[str]) -> tuple[int, int]:
    """Lengths of the prefix and of the suffix that every name shares (not overlapping)."""
    if len(names) < 2:
        return 0, 0
    pre = len(os.path.commonprefix(names))
    shortest = min(len(n) for n in names)
    suf = len(os.path.commonprefix([n[::-1] for n in names]))
    return pre, min(suf, shortest - pre)


def short_names(names: list[str], width: int) -> tuple[list[str], bool]:
    """Names of at most ``width`` characters that stay distinct where the full names are.

    Cut in the middle first; where that makes two names equal, the parts every name shares (prefix
    and suffix) are cut instead, so that what differs stays visible; where even that collides, short
    ids ``#1, #2, …``. Returns the names and whether they are ids (a legend must follow)."""
    if all(len(n) <= width for n in names):
        return list(names), False

    def distinct(short: list[str]) -> bool:
        return len(set(short)) == len(set(names))

    cut = [_elide(n, width) for n in names]
    if distinct(cut):
        return cut, False
    pre, suf = _common_affixes(names)
    keep = 3  # a few shared characters stay on each side, as a reminder of what was cut
    cores = []
    for n in names:
        core = n[max(0, pre - keep):len(n) - max(0, suf - keep)]
        core = ("…" if pre > keep else "") + core + ("…" if suf > keep else "")
        cores.append(_elide(core, width))
    if distinct(cores):
        return cores, False
    return [f"#{i + 1}" for i in range(len(names))], True


def _rank_table(result, rows: list[dict], metric_cols: list[str], names: list[str]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title=f"top {len(rows)} of {len(result.rows)} "
                                             f"(by {', '.join(result.by)}; rank 1 = best)")
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("arch", no_wrap=True)
    for c in metric_cols:
        table.add_column(c, justify="right", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for row, name in zip(rows, names):
        cells = [fmt(row["nlc"], row.get("nlc_std"), digits=3) if c == "nlc" else _num(row[c], c)
                 for c in metric_cols]
        table.add_row(str(row["rank"]), Text(name), *cells, _num(row["score"], "score"),
                      Text(row["status"], style="green" if row["status"] == "ok" else "red"))
    return table


def _width(console: Console, table: Table) -> int:
    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def render_rank(result, top: int, out: str | None, wide: bool = False) -> None:
    """The ranked table on stdout. In a terminal (unless ``wide``) it fits the terminal's width: the
    ``rank``, ``arch``, ``score`` and ``status`` columns always show, metric columns are added while
    they fit (those of ``--by`` first) and the others named below; names are cut so that they stay
    distinct. A file or a pipe gets every column and whole names."""
    metric_cols = [c for c in result.columns if c not in ("arch", "status", "reason", "score", "rank", "nlc_std")]
    rows = result.top(top)
    full = [row["arch"] for row in rows]
    console = out_console
    fit = console.is_terminal and not wide
    if not fit:  # a file, a pipe or --wide: as wide as the table, never truncated
        table = _rank_table(result, rows, metric_cols, full)
        console = Console(highlight=False, width=max(_width(console, table), console.width))
        shown, hidden, ids = metric_cols, [], False
    else:
        limit = console.width
        order = [c for c in result.by if c in metric_cols]
        order += [c for c in _PRIORITY if c in metric_cols and c not in order]
        order += [c for c in metric_cols if c not in order]
        chosen: list[str] = []
        # names keep about a third of the width (or their whole length) while columns are chosen
        reserve = min(max(len(n) for n in full), max(_NAME_MIN, limit // 3))
        narrow = [_elide(n, reserve) for n in full]
        for c in order:
            trial = [m for m in metric_cols if m in chosen or m == c]
            if _width(console, _rank_table(result, rows, trial, narrow)) <= limit:
                chosen.append(c)
        shown = [c for c in metric_cols if c in chosen]
        hidden = [c for c in metric_cols if c not in chosen]
        base = _width(console, _rank_table(result, rows, shown, ["" for _ in rows]))
        room = max(_NAME_MIN, limit - base, len("arch"))
        names, ids = short_names(full, room)
        table = _rank_table(result, rows, shown, names)
    console.print(table)
    if ids:
        for name, row in zip(names, rows):
            console.print(Text(f"{name} = {row['arch']}", style="dim"), soft_wrap=not fit)
    if hidden:
        console.print(Text(f"not shown at this width: {', '.join(hidden)} (--wide shows every column; "
                           f"--json{' or ' + str(out) if out else ''} holds them all)", style="dim"), soft_wrap=not fit)
    for row in rows:
        if row.get("reason"):
            console.print(Text(f"{row['rank']}. {row['arch']}: {row['reason']}", style="dim"), soft_wrap=not fit)
    saved = f"; results in {out}" if out else ""
    err_console.print(f"[dim]{result.computed} computed, {result.resumed} resumed{saved}[/]")


# --------------------------------------------------------------------------- zsad select

def _marginal(c: dict) -> str:
    if c.get("marginal") is None:
        return "—"
    lo, hi = c.get("marginal_low"), c.get("marginal_high")
    interval = f" [{lo:+.2f}, {hi:+.2f}]" if lo is not None else ""
    return f"{c['marginal']:+.3f}{interval}"


def render_selection(doc: dict) -> None:
    """Positions as rows, candidates as columns: marginal effect [95% interval], σ², the selected one marked."""
    fair = doc["options"]["fair"]
    width = max(len(p["candidates"]) for p in doc["positions"])
    title = (f"{doc['space']['name']}: marginal effect on the default score [95% bootstrap interval] over "
             f"{doc['options']['samples']} sampled architectures ({'fair initialization' if fair else 'as is'}); "
             "σ² of the candidate alone; ★ selected")
    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left")
    table.add_column("position", no_wrap=True)
    for i in range(width):
        table.add_column(f"candidate {i + 1}")
    show_as_is = fair and doc["options"]["fair_changes_anything"]
    for pos in doc["positions"]:
        cells = []
        for c in pos["candidates"]:
            text = Text()
            text.append(("★ " if c["selected"] else "") + c["choice"], style="bold green" if c["selected"] else "bold")
            text.append(f"\n{_marginal(c)}")
            if show_as_is and c.get("as_is", {}).get("marginal") is not None:
                text.append(f"\nas is {_marginal(c['as_is'])}", style="dim")
            s2 = c.get("sigma2")
            iso = c.get("isometry_share")
            text.append(f"\nσ² {fmt(s2, digits=3)}, iso {fmt(None if iso is None else 100 * iso, digits=3)}%, "
                        f"κ {fmt(c.get('condition'), digits=3)}", style="dim")
            if show_as_is and c.get("spectrum_as_is"):
                text.append(f" (as is σ² {fmt(c['spectrum_as_is'].get('sigma2'), digits=3)})", style="dim")
            cells.append(text)
        cells += [""] * (width - len(cells))
        table.add_row(Text(pos["name"]), *cells)
    console = out_console
    if not console.is_terminal:
        w = Measurement.get(console, console.options.update_width(1000), table).maximum
        console = Console(highlight=False, width=max(w, console.width))
    console.print(table)
    sel = doc["selected"]
    console.print(Text(f"selected: {sel['arch']}", style="bold green"), soft_wrap=True)
    console.print(Text(f"  score {fmt(sel['score'], digits=4)}, rank {sel['rank']} of {sel['ranked_among']} "
                       f"(the sample{'' if sel['in_sample'] else ' and it'}); nlc {fmt(sel.get('nlc'), digits=4)}, "
                       f"σ² {fmt(sel.get('sigma2'), digits=3)}, params {sel.get('params')}, "
                       f"flops {sel.get('flops')}, status {sel['status']}"), soft_wrap=True)
    for line in sel.get("fair_init") or []:
        console.print(Text(f"  fair initialization: {line}", style="dim"), soft_wrap=True)
    kinds = {}
    for pos in doc["positions"]:
        for c in pos["candidates"]:
            kinds.setdefault(c["fair_init"]["kind"], []).append(f"{pos['name']}={c['choice']}")
    for kind, names in kinds.items():
        if kind != "critical":
            example = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
            why = "" if kind == "as is" else f" ({kind})"
            console.print(Text(f"compared as is{why}: {example}", style="dim"), soft_wrap=True)
    spectrum_on = {c.get("spectrum_on") for p in doc["positions"] for c in p["candidates"] if c.get("spectrum_on")}
    for on in sorted(spectrum_on):
        console.print(Text(f"spectrum: {on}", style="dim"), soft_wrap=True)
    for note in doc.get("notes", []):
        console.print(Text(f"note: {note}", style="dim"), soft_wrap=True)

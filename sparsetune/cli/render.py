"""Rich rendering for the CLI: profiles, eval tables, the gate, search progress (imported only by the CLI)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from ..profile.budget import ESTIMATORS
from ..profile.profile import Profile

__all__ = ["render_check", "render_comparison", "render_profile", "render_progress"]

_DASH = "-"


def _table(**kwargs: Any) -> Table:
    """Every table alike, and narrow enough for 80 columns: no vertical rules, one space between columns."""
    return Table(box=None, padding=(0, 1, 0, 0), pad_edge=False, header_style="bold underline", title_justify="left",
                 caption_justify="left", **kwargs)


def _wrap_fields(fields: list[str], width: int) -> list[str]:
    """Fields joined by ", " into lines of at most `width` columns, breaking only between fields (a field longer
    than a line breaks between its words); the caller indents the lines after the first."""
    import textwrap

    lines: list[str] = []
    for field in fields:
        pieces = textwrap.wrap(field, max(width, 20), break_long_words=False, break_on_hyphens=False) or [""]
        if lines and len(lines[-1]) + 2 + len(pieces[0]) <= width:
            lines[-1] += ", " + pieces.pop(0)
        elif lines:
            lines[-1] += ","
        lines += pieces
    return lines


def _num(value: float | None, fmt: str = ".3f") -> str:
    return _DASH if value is None else format(value, fmt)


def render_profile(profile: Profile, console: Console, title: str = "") -> None:
    """Print the profile's identity, its buckets, per-task accuracy and kernel configs per device."""
    m, w, f, p = profile.model, profile.workload, profile.floor, profile.provenance
    floor = f"{f.metric} >= {f.value:g}" + (" x dense" if f.kind == "relative" else "") + " in every bucket"
    floor += (f", judged on its {f.confidence:.0%} lower confidence bound" if f.confidence is not None
              else ", judged on the point estimate")
    floor += ("; every task must meet it on its own samples" if f.per_task
              else "; no task may fall below it beyond noise")
    kv = f" ({m.kv_heads} kv)" if m.kv_heads != m.heads else ""
    positions = f", {m.max_positions} positions" if m.max_positions else ""
    head = [
        ("profile", [title, f"schema {profile.schema}", f"sparsetune {p.sparsetune}", f"created {p.created}"]),
        ("model", [f"{m.name}: {m.layers} layers", f"{m.heads} heads{kv}", f"head_dim {m.head_dim}{positions}",
                   f"config {m.config_sha256[:12]}"]),
        ("workload", [f"{w.name}: {w.samples} samples", f"sha256 {w.sha256[:12]}"]),
        ("floor", [floor]),
        ("search", [f"method {profile.method}", f"study {p.study}", f"{p.trials_per_bucket} trials per bucket",
                    f"seed {p.seed}"] + ([f"storage {p.storage}"] if p.storage else [])),
    ]
    for key, fields in head:
        for line in _wrap_fields([x for x in fields if x], console.width - 10):
            console.print(f"[bold]{key:<9}[/bold] {line}" if line is not None else "", markup=True,
                          highlight=False, soft_wrap=True)
            key = ""
    console.print()
    console.print(_buckets_table(profile))
    tasks = _tasks_table(profile)
    if tasks is not None:
        console.print(tasks)
    for name, section in profile.devices.items():
        console.print(_device_table(profile, name))
    if not profile.devices:
        console.print("no kernel configs: run search on a GPU (or the cost model) to add a device section")


def _range(profile: Profile, i: int) -> str:
    return profile.span(i).label


def _budget_text(budget: Any) -> str:
    if budget is None:
        return "dense"
    ratio = "keep" if budget.method == "topk" else "tau"
    text = f"{ratio} {budget.ratio:.3g} b{budget.block_size} s{budget.sink} l{budget.local}"
    if budget.estimator != "pooled":  # pooled is the default; others are named (oracle: not deployable)
        text += f" {budget.ranking}"
    return text


def _buckets_table(profile: Profile) -> Table:
    """One row per bucket, 80 columns wide: accuracy on the search and confirmation samples, the bound judged
    (confirmation), n of each, achieved sparsity, attention cost relative to dense, the task that bound it."""
    notes = ["+ longer inputs use the last bucket's budget"]
    if profile.min_len > 1:
        notes.append(f"inputs shorter than {profile.min_len} run dense")
    notes.append("acc: search samples; conf, lower: confirmation samples; n: search+confirmation")
    diagnostic = sorted({b.budget.estimator for b in profile.buckets
                         if b.budget is not None and not ESTIMATORS[b.budget.estimator].deployable})
    if diagnostic:
        notes.append(f"{', '.join(diagnostic)}: a diagnostic ceiling that costs a dense pass, not for deployment")
    table = _table(title="buckets", caption="; ".join(notes))
    for name in ("tokens", "budget", "acc", "conf", "lower", "n", "sparsity", "cost", "bound by"):
        table.add_column(name, justify="left" if name in ("tokens", "budget", "bound by") else "right", no_wrap=True)
    reasons = []
    for i, b in enumerate(profile.buckets):
        a, c = b.accuracy, b.confirmation
        n = _DASH if a is None else str(a.n) + (f"+{c.n}" if c is not None else "")
        lower = (c or a) and (c or a).lower_bound  # type: ignore[union-attr]
        table.add_row(
            _range(profile, i), _budget_text(b.budget), _num(a and a.sparse), _num(c and c.sparse), _num(lower), n,
            _num(b.sparsity, ".0%"), _DASH if b.cost is None else f"{b.cost:.2f}x", b.bound_by or _DASH)
        if b.reason:
            reasons.append(f"{_range(profile, i)}: {b.reason}")
    if reasons:
        table.caption = "\n".join([table.caption or "", *reasons]).strip()
    return table


def _tasks_table(profile: Profile) -> Table | None:
    rows = [(i, task, t) for i, b in enumerate(profile.buckets) if b.accuracy and b.accuracy.per_task
            for task, t in b.accuracy.per_task.items()]
    if not rows:
        return None
    table = _table(title="accuracy per task")
    for name in ("tokens", "task", "acc", "dense", "n"):
        table.add_column(name, justify="left" if name in ("tokens", "task") else "right", no_wrap=True)
    for i, task, t in rows:
        table.add_row(_range(profile, i), task, _num(t.sparse), _num(t.dense), str(t.n))
    return table


def _device_table(profile: Profile, name: str) -> Table:
    section = profile.devices[name]
    table = _table(title=f"{name} ({section.timing})")
    for col in ("tokens", "BLOCK_M", "BLOCK_N", "warps", "stages", "ms", "dense ms", "sel ms", "speed-up"):
        table.add_column(col, justify="left" if col == "tokens" else "right", no_wrap=True)
    for i, b in enumerate(profile.buckets):
        k = section.kernels.get(b.max_len)
        if k is None:
            continue
        speedup = (f"{k.dense_ms / (k.ms + (k.selection_ms or 0.0)):.2f}x"
                   if k.ms is not None and k.dense_ms is not None else _DASH)
        table.add_row(_range(profile, i), str(k.BLOCK_M), str(k.BLOCK_N), str(k.num_warps), str(k.num_stages),
                      _num(k.ms), _num(k.dense_ms), _num(k.selection_ms), speedup)
    return table


def render_comparison(rows: list, console: Console, title: str = "") -> None:
    """`sparsetune eval`: per bucket and task, dense vs sparse accuracy, lower bound and sparsity."""
    table = _table(title=title or None,
                  caption="lower: lower confidence bound of the sparse accuracy, paired with dense (score bound)")
    for name in ("tokens", "task", "n", "dense", "sparse", "lower", "sparsity"):
        table.add_column(name, justify="left" if name in ("tokens", "task") else "right", no_wrap=True)
    for r in rows:
        style = "bold" if r.task == "all" else None
        drop = "red" if r.sparse < r.dense else None
        table.add_row(r.label, r.task, str(r.n), f"{r.dense:.3f}",
                      f"[{drop}]{r.sparse:.3f}[/{drop}]" if drop else f"{r.sparse:.3f}",
                      f"{r.lower_bound:.3f}", f"{r.sparsity:.0%}", style=style)
    console.print(table)


def render_check(report: Any, console: Console, title: str) -> None:
    """The gate's table: one row per profile bucket."""
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    colour = {"pass": "green", "fail": "bold red", "dense": "dim", "untested": "yellow"}
    floor = report.floor
    per_task = ", every task" if floor.get("per_task") else ""
    table = _table(title=f"{title}\nfloor: {floor['kind']} {floor['value']} on the point estimate{per_task}",
                   caption=f"lower, upper: {report.confidence:.0%} confidence bounds of the sparse accuracy; "
                           "fail+: a miss even the upper bound confirms (beyond noise)")
    for name in ("bucket", "n", "dense", "sparse", "floor", "lower", "upper", "sparsity", "bound by", "verdict"):
        table.add_column(name, justify="left" if name in ("bucket", "verdict", "bound by") else "right")
    for b in report.buckets:
        span = b.label if b.method is None else f"{b.label}\n{b.method}"  # the bucket, then how it ranks blocks
        verdict = f"[{colour[b.verdict.value]}]{b.verdict.value}{'+' if b.beyond_noise else ''}[/]"
        table.add_row(span, str(b.n), pct(b.dense), pct(b.sparse), pct(b.floor), pct(b.lower_bound),
                      pct(b.upper_bound), _num(b.sparsity, ".0%"), b.bound_by or _DASH, verdict)
    console.print(table)
    console.print("[green]pass[/]: every checked bucket meets the floor" if report.ok
                  else "[bold red]fail[/]: a bucket misses the floor")


def render_progress(progress: list[Any], console: Console, title: str) -> None:
    """`sparsetune collect`: trials per bucket by state, workers, best cost so far."""
    table = _table(title=title)
    for col in ("bucket", "evaluated", "reused", "pruned", "running", "waiting", "failed", "retried", "workers", "best"):
        table.add_column(col, justify="left" if col in ("bucket", "workers") else "right")
    for b in progress:
        table.add_row(f"<= {b.max_len}", f"{b.complete}/{b.target}", str(b.reused), str(b.pruned), str(b.running), str(b.waiting),
                      str(b.failed), str(b.retried), str(len(b.workers)),
                      "-" if b.best_cost is None else f"{b.best_cost:.2f}x dense")
    console.print(table)

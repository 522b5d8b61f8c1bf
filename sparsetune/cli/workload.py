"""`sparsetune workload ...`: make and inspect workloads."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ._app import ModelOpt, OutOpt, SeedOpt, workload_app


@workload_app.command()
def synth(
    model: ModelOpt,
    out: OutOpt,
    tasks: Annotated[Optional[str], typer.Option(
        "--tasks", help="Comma-separated; default: every task of the style (words: niah,multikey,vt,cwe; "
                        "text: niah,multikey,mv,vt,cwe).")] = None,
    lengths: Annotated[str, typer.Option("--lengths", help="Comma-separated lengths in tokens.")] = "256,512,1024,2048",
    per_length: Annotated[int, typer.Option("--per-length", help="Samples per task and length.")] = 16,
    style: Annotated[str, typer.Option(
        "--style", help="auto (words for the demo model, text for any other), words (the demo's word-level "
                        "format) or text (plain-English raw completions for pretrained LMs).")] = "auto",
    seed: SeedOpt = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file at --out that is not a "
                                                        "workload.")] = False,
) -> None:
    """Generate RULER-style synthetic tasks sized in tokens of the model's tokenizer, as JSONL."""
    from .._io import check_ours, check_writable, is_workload_file
    from ..errors import WorkloadError
    from ..workload import synth_workload, write_jsonl
    from ..workload.files import parse_lengths, parse_tasks
    from ..workload.models import load_tokenizer, max_positions
    from ..workload.tasks import STYLES, style_for_model

    sizes = parse_lengths(lengths)
    check_writable(out, WorkloadError)
    check_ours(out, "workload", is_workload_file, force, WorkloadError)
    chosen = style_for_model(model) if style == "auto" else style
    names = parse_tasks(tasks) if tasks is not None else list(STYLES.get(chosen, ()))
    rows = synth_workload(load_tokenizer(model), names, sizes, per_length, seed,
                          max_positions=max_positions(model), style=chosen)
    write_jsonl(out, rows)
    typer.echo(f"wrote {len(rows)} samples ({chosen} style) to {out}")

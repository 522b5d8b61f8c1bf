"""`sparsetune workload ...`: make and inspect workloads."""

from __future__ import annotations

from typing import Annotated

import typer

from ._app import ModelOpt, OutOpt, SeedOpt, workload_app


@workload_app.command()
def synth(
    model: ModelOpt,
    out: OutOpt,
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated: niah,multikey,vt,cwe.")] = "niah,multikey,vt,cwe",
    lengths: Annotated[str, typer.Option("--lengths", help="Comma-separated lengths in tokens.")] = "256,512,1024,2048",
    per_length: Annotated[int, typer.Option("--per-length", help="Samples per task and length.")] = 16,
    seed: SeedOpt = 0,
) -> None:
    """Generate RULER-style synthetic tasks sized in tokens of the model's tokenizer, as JSONL."""
    from ..workload import synth_workload, write_jsonl
    from ..workload.files import parse_lengths, parse_tasks
    from ..workload.models import load_tokenizer

    sizes = parse_lengths(lengths)
    rows = synth_workload(load_tokenizer(model), parse_tasks(tasks), sizes, per_length, seed)
    write_jsonl(out, rows)
    typer.echo(f"wrote {len(rows)} samples to {out}")

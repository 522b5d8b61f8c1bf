"""`sparsetune collect`: the profile (or each bucket's progress) from a study's trials in storage."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ._app import JsonOpt, OutOpt, StorageOpt, StudyOpt, app, console


@app.command()
def collect(
    out: OutOpt = Path("profile.yaml"),
    storage: StorageOpt = None,
    study: StudyOpt = None,
    status: Annotated[bool, typer.Option("--status", help="Only show each bucket's progress; write nothing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file at --out that is not a "
                                                        "profile.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Write the profile and plot from a study's trials in storage, running none; shows each bucket's progress.

    Safe while workers still run (the profile then holds the trials finished so far).
    """
    import json

    from ..plot import plot_frontier
    from ..search import bucket_outcomes, profile_from_storage, study_progress
    from ..search.storage import storage_for
    from .render import render_profile, render_progress

    from .._io import check_ours, check_writable
    from ..deploy import is_profile_file
    from ..errors import SearchError

    name = study or out.stem
    if not status:
        check_writable(out, SearchError)
        check_writable(out.with_suffix(".png"), SearchError)
        check_ours(out, "profile", is_profile_file, force, SearchError)
    st, where = storage_for(out, storage, existing=True)
    progress = study_progress(st, name)
    rows = [b.to_dict() for b in progress]
    out_console = console()
    if not json_output:
        render_progress(progress, out_console, title=f"study {name}: trials per bucket")
    if status:
        if json_output:
            sys.stdout.write(json.dumps({"storage": where, "buckets": rows}, indent=2) + "\n")
        return
    profile = profile_from_storage(st, name)
    outcomes = bucket_outcomes(st, name)
    profile.save(out)
    plot_path = plot_frontier(outcomes, out.with_suffix(".png"),
                              title=f"{profile.model.name} on {profile.workload.name}: "
                                    f"accuracy vs attention cost per bucket")
    if json_output:
        sys.stdout.write(json.dumps({"profile": profile.to_dict(), "path": str(out), "plot": str(plot_path),
                                    "storage": where, "buckets": rows}, indent=2) + "\n")
        return
    render_profile(profile, out_console, title=str(out))
    unfinished = [b for b in progress if not b.finished]
    note = f"; {len(unfinished)} bucket(s) still short of their trials" if unfinished else ""
    out_console.print(f"wrote {out} and {plot_path} from {where}{note}")

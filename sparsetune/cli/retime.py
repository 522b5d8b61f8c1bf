"""`sparsetune retime`: time a profile's kernel launch configs on this GPU."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import JsonOpt, ProfileArg, app, console



@app.command()
def retime(
    profile: ProfileArg,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write (default: in place).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Time the kernel launch configs of a profile's buckets on this GPU and add its device section.

    Budgets and accuracy are kept: tune once, time kernels on each GPU type.
    """
    from .._io import check_writable
    from ..errors import ProfileError
    from ..profile import load_profile
    from ..timing import retime_profile

    check_writable(out or profile, ProfileError)
    updated = retime_profile(load_profile(profile))
    updated.save(out or profile)
    if json_output:
        sys.stdout.write(updated.to_json())
        return
    from .render import render_profile

    render_profile(updated, console(), title=str(out or profile))

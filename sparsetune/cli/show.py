"""`sparsetune show`: a profile as tables (or JSON)."""

from __future__ import annotations

import sys

from ._app import JsonOpt, ProfileArg, app, console


@app.command()
def show(profile: ProfileArg, json_output: JsonOpt = False) -> None:
    """Show a profile: buckets, budgets, accuracy, sparsity and kernel configs per device."""
    from ..profile import load_profile

    loaded = load_profile(profile)
    if json_output:
        sys.stdout.write(loaded.to_json())
        return
    from .render import render_profile

    render_profile(loaded, console(), title=str(profile))

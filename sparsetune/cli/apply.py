"""`sparsetune apply`: deploy a profile with its model, export it for serving engines, or gate it."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ._app import AnswerTokensOpt, ApplyModelOpt, ApplyOutOpt, JsonOpt, ProfileArg, ThreadsOpt, app, console


@app.command()
def apply(
    profile: ProfileArg,
    model: ApplyModelOpt = None,
    out: ApplyOutOpt = None,
    in_place: Annotated[bool, typer.Option("--in-place", help="Make the model folder itself the deploy folder.")] = False,
    link: Annotated[str, typer.Option("--link", help="How the deploy folder holds the model's other files: "
                                                     "symlink or hardlink (never a copy).")] = "symlink",
    fmt: Annotated[str, typer.Option("--format", help="folder (deploy folder), json (flat lookup table) or "
                                                      "hf-overrides (vLLM --hf-overrides, SGLang "
                                                      "--json-model-override-args).")] = "folder",
    check: Annotated[bool, typer.Option("--check", help="Gate on held-out samples (--workload): exit 1 when a "
                                                        "bucket misses the profile's floor; writes nothing then.")] = False,
    workload: Annotated[Optional[str], typer.Option(
        "--workload", "-w", help="Held-out samples for --check: a JSONL file, or 'demo-heldout'.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Apply a profile tuned for another model "
                                                        "(its config hash differs).")] = False,
    require_all: Annotated[bool, typer.Option(
        "--require-all", help="With --check: exit 1 when a sparse bucket has no held-out sample (untested).")] = False,
    answer_tokens: AnswerTokensOpt = 8,
    threads: ThreadsOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Deploy a profile with its model (links, never copies), export it for serving engines, or gate it.

    Exit codes: 0 done (every checked bucket meets the floor), 1 a bucket misses the floor (or, with
    --require-all, a sparse bucket went untested), 2 bad input.
    """
    import json

    from .. import deploy as deploy_lib
    from ..profile import load_profile

    from .._io import check_writable
    from ..errors import DeployError

    deploy_lib.check_apply_options(fmt, model, out, in_place, check, workload)
    if threads is not None and threads < 1:
        raise DeployError(f"threads: must be an integer >= 1, got {threads!r}")
    loaded_profile = load_profile(profile)
    nothing_to_check = check and all(b.dense for b in loaded_profile.buckets)
    if check and not nothing_to_check:  # a missing model or workload is refused now, not after torch loads
        from ..evaluate.inputs import check_inputs

        check_inputs(model, workload)  # type: ignore[arg-type]
    if out is not None:  # before a check that may take minutes: an unwritable --out fails now
        check_writable(out / "config.json" if fmt == "folder" else out, DeployError)
    warnings = [w for w in [deploy_lib.schema_note(profile)] if w]
    folder = deploy_lib.model_folder(model) if model is not None else None
    if folder is not None:
        warnings += [w for w in [deploy_lib.check_model(loaded_profile, folder, force)] if w]
    if fmt == "folder" and folder is not None:
        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        warnings += [w for w in [deploy_lib.device_warning(loaded_profile, gpu)] if w]
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)

    result: dict = {"warnings": warnings}
    report = None
    untested: list[str] = []
    if nothing_to_check:  # nothing the gate could find: load nothing
        note = f"every bucket of {profile} is dense: the gate has nothing to check (no model or workload loaded)"
        print(f"warning: {note}", file=sys.stderr)
        warnings.append(note)
        check = False
    if check:
        from ..evaluate import check_profile, load_inputs
        from .progress import StepProgress
        from .render import render_check

        with StepProgress(console(stderr=True), f"check: {profile} on {workload}") as progress:
            loaded, work = load_inputs(model, workload, answer_tokens, progress=progress.update,  # type: ignore[arg-type]
                                       threads=threads)
            for note in work.warnings:
                print(f"warning: {note}", file=sys.stderr)
                warnings.append(note)
            report = check_profile(loaded_profile, loaded, work.samples, workload=work.name,
                                   progress=progress.update)
        untested = [b.label for b in report.buckets if b.verdict.value == "untested"]
        if untested:  # passing says nothing about a bucket no sample reached
            note = (f"untested: no held-out sample of {work.name} falls in the sparse bucket(s) {', '.join(untested)}; "
                    "their floor is unchecked" + ("" if require_all else " (--require-all makes this fail)"))
            print(f"warning: {note}", file=sys.stderr)
            warnings.append(note)
        result["check"] = report.to_dict()
        if not json_output:
            render_check(report, console(), title=f"check: {profile} with {loaded.name} on {work.name}")
    gate_ok = report is None or (report.ok and not (require_all and untested))
    if gate_ok:
        if fmt == "folder" and (out is not None or in_place):
            done = deploy_lib.deploy(loaded_profile, folder, out, in_place=in_place, link=link)  # type: ignore[arg-type]
            result["deployed"] = done.to_dict()
            if not json_output:
                how = ("in place" if in_place else f"converted from GGUF: {len(done.linked)} files"
                       if done.link == "converted" else f"{len(done.linked)} files {link}ed")
                typer.echo(f"deployed {profile} to {done.folder} ({how}); load it with: import sparsetune; "
                           f"AutoModelForCausalLM.from_pretrained({str(done.folder)!r}, "
                           f"attn_implementation='sparsetune')")
        elif fmt != "folder":
            text = deploy_lib.export_table(loaded_profile, fmt, out)
            if out is None:
                sys.stdout.write(text)
                return
            result["exported"] = {"format": fmt, "path": str(out)}
            if not json_output:
                typer.echo(f"wrote {fmt} table of {profile} to {out}")
    elif not json_output and (out is not None or in_place):
        typer.echo("not deployed: " + ("a bucket misses the floor" if not report.ok  # type: ignore[union-attr]
                                       else "a sparse bucket is untested (--require-all)"), err=True)
    if json_output:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    if not gate_ok:
        raise typer.Exit(1)

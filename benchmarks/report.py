"""Render the benchmark JSONs into benchmarks/RESULTS.md (three sections) and README.md ("Why per-length budgets").

    .venv/bin/python benchmarks/report.py

Only the blocks between this script's markers are replaced; everything else in both files is kept as is
(the file is re-read right before writing). Every number comes from benchmarks/out/*.json.
"""

from __future__ import annotations

import json
import math
from typing import Any

from sparsetune.profile.budget import Budget

import _bench as B
from search_efficiency import RANDOM_CAP
from _bench import fmt, md_table, pct

RUN_ALL = "bash benchmarks/run_all.sh"


def load(name: str) -> dict[str, Any] | None:
    p = B.OUT / name
    return json.loads(p.read_text()) if p.is_file() else None


def run_times() -> str:
    """The last `run_all.sh`'s step times, and the evaluation seconds stored in the caches, if present."""
    out = []
    f = B.OUT / "run_all_times.tsv"
    if f.is_file():
        rows = [line.split("\t") for line in f.read_text().splitlines() if "\t" in line]
        d = dict(rows)
        steps = [(k, v) for k, v in rows if k not in ("date", "total")]
        out.append(f"- Last `{RUN_ALL}` ({d.get('date', '?')}): {d.get('total', '?')} s in all ("
                   + "; ".join(f"{k}: {v} s" for k, v in steps) + "), with the caches as they were.")
    secs, chunks = 0.0, 0
    for c in sorted(B.CACHE.glob("evals-*.jsonl")) if B.CACHE.is_dir() else []:
        for line in c.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            secs += r.get("seconds", 0.0)
            chunks += 1
    if chunks:
        out.append(f"- The evaluation caches hold {chunks} chunks of 8 samples that took {secs:.0f} s of model time "
                   "to compute (under this machine's load at the time): about what a cold run spends evaluating.")
    return "\n".join(out)


def provenance(m: dict[str, Any], extra: str = "", reproduce: str | None = None) -> str:
    return (f"- Machine: {m['machine']}\n- Date: {m['date']} (commit {m['commit']}); wall time {m['wall_s']:.0f} s"
            f"{extra}\n- Reproduce: `{m['command']}` (or everything: `{reproduce or RUN_ALL}`)")


def relation(a: float, b: float) -> str:
    """'X% less than' / 'X% more than': cost a against cost b."""
    return f"{pct(1 - a / b)} less than" if a <= b else f"{pct(a / b - 1)} more than"


def trend(seq: list[tuple[int, float]]) -> str:
    """How a per-length series moves: every step up, or where it falls."""
    falls = [(a, b) for a, b in zip(seq, seq[1:]) if b[1] < a[1] - 1e-9]
    if all(abs(x[1] - seq[0][1]) < 1e-9 for x in seq):
        return f"It is flat: {seq[0][1]:.2f} at every length."
    overall = "rises" if seq[-1][1] > seq[0][1] else "does not rise"
    if not falls:
        return f"It {overall} with length at every step ({seq[0][1]:.2f} -> {seq[-1][1]:.2f})."
    where = ", ".join(f"from {a[0]} to {b[0]} ({a[1]:.2f} -> {b[1]:.2f})" for a, b in falls)
    return f"It {overall} from {seq[0][0]} to {seq[-1][0]} tokens overall ({seq[0][1]:.2f} -> {seq[-1][1]:.2f}) but falls {where}."


def budget_str(b: dict[str, Any] | None) -> str:
    if b is None:
        return "dense"
    ranking = Budget(**b).ranking  # pooled is the default and goes unnamed; others are named as `show` names them
    return (f"keep {b['keep']:.3g}, block {b['block_size']}, sink {b['sink']}, local {b['local']}"
            + ("" if ranking == "pooled" else f", {ranking}"))


# ---------------------------------------------------------------------------------------------- tolerance


DEMO_NOTES = [
    "Sparsity counts blocks (a partly masked diagonal block counts as one visible block), as the cost model does. "
    "At 256 tokens with block 64 there are only 4 blocks, and sink + local keep 2 of them, so little sparsity is "
    "possible there at this block size.",
    "Accuracy is teacher-forced exact match; the model is the repo's demo (2 layers, 4 heads, 2 KV heads, "
    "head_dim 64), not a production LLM.",
]


def tolerance_section(t: dict[str, Any], title: str = "## Tolerance map", notes: list[str] = DEMO_NOTES,
                      reproduce: str | None = None) -> str:
    tasks = sorted(t["buckets"][0]["dense"])
    s = t["slice"]
    lines = [title, "",
             f"Accuracy against sparsity per length bucket and task, {t['model']} model, topk with block "
             f"{s['block_size']}, sink {s['sink']}, local {s['local']} fixed and keep over "
             f"{{{', '.join(f'{k:g}' for k in t['keeps'])}}}. Splits {' + '.join(t['splits'])} pooled. "
             f"Floor: {t['floor']} x dense accuracy of the same bucket (and task).", "",
             f"![tolerance map](out/tolerance_{t['model']}.png)", "",
             "Highest sparsity that still meets the floor (sparsity = skipped / visible key blocks of the prefill; "
             "in brackets the keep ratio; `*`: a less sparse keep missed the floor, i.e. the curve is noisy there):", ""]
    n_task = t["buckets"][0]["summary"][tasks[0]]["n"]
    header = ["bucket", "n", "dense acc.", "all tasks"] + [f"{x} (n={n_task})" for x in tasks] + ["whole grid (search split)"]
    rows = []
    for bk in t["buckets"]:
        sm = bk["summary"]

        def cell(key: str) -> str:
            v = sm[key]
            if v["dense_accuracy"] == 0:
                return "- (dense 0)"  # every budget "meets" a floor relative to nothing
            star = "*" if v["non_monotone"] else ""
            return f"{v['max_sparsity']:.2f} ({v['keep']:g}){star}"

        g = bk.get("grid_best")
        grid = (f"{g['sparsity']:.2f} (keep {g['keep']:g}, block {g['block_size']}, sink {g['sink']}, local {g['local']})"
                if g else "-")
        rows.append([bk["max_len"], sm["all"]["n"], fmt(sm["all"]["dense_accuracy"], 2), cell("all")]
                    + [cell(x) for x in tasks] + [grid])
    lines.append(md_table(header, rows))
    lines += ["", "Accuracy per keep (all tasks, then each task), pooled splits:", "", "<details><summary>full table</summary>", ""]
    rows = []
    for bk in t["buckets"]:
        for r in sorted(bk["rows"], key=lambda r: -r["keep"]):
            rows.append([bk["max_len"], f"{r['keep']:g}", f"{r['sparsity']:.3f}", fmt(r["accuracy"]["all"], 3)]
                        + [fmt(r["accuracy"][x], 3) for x in tasks])
    lines.append(md_table(["bucket", "keep", "sparsity", "all"] + tasks, rows))
    lines += ["", "</details>", "", "What the data says:", ""]
    lines += [f"- {x}" for x in tolerance_findings(t)]
    lines += ["", "Notes:", "",
              f"- n per task and bucket is {t['buckets'][0]['summary'][tasks[0]]['n']}: a per-task floor of "
              f"{t['floor']} x dense then allows no lost sample where dense is perfect, so per-task columns mean "
              "\"no sample lost\" and are noisy; the all-tasks column is the one the search uses."]
    lines += [f"- {x}" for x in notes] + ["", provenance(t["meta"], reproduce=reproduce)]
    return "\n".join(lines)


def tolerance_findings(t: dict[str, Any]) -> list[str]:
    tasks = sorted(t["buckets"][0]["dense"])
    out = []
    seq = [(bk["max_len"], bk["summary"]["all"]["max_sparsity"]) for bk in t["buckets"]]
    out.append("Tolerated sparsity (all tasks, this slice) by length: "
               + ", ".join(f"{e}: {s:.2f}" for e, s in seq) + ". " + trend(seq))
    grid = [(bk["max_len"], bk["grid_best"]["sparsity"]) for bk in t["buckets"] if bk.get("grid_best")]
    if len(grid) == len(t["buckets"]):
        out.append("Over the whole grid (any block size, sink, local; search split, n = 32 per bucket): "
                   + ", ".join(f"{e}: {s:.2f}" for e, s in grid) + ". " + trend(grid))
    # fragility: mean accuracy relative to dense over the sparse keeps, per task, across buckets
    score = {}
    for task in tasks:
        vals = []
        for bk in t["buckets"]:
            d = bk["dense"][task]["correct"] / bk["dense"][task]["n"]
            for r in bk["rows"]:
                if r["keep"] < 1 and d > 0:
                    vals.append(r["accuracy"][task] / d)
        score[task] = sum(vals) / len(vals)
    ranked = sorted(tasks, key=lambda x: score[x])
    out.append("Fragility (mean accuracy / dense over all sparse keeps and buckets; lower = more fragile): "
               + ", ".join(f"{x} {score[x]:.2f}" for x in ranked) + ".")
    single = [x for x in ("niah", "multikey") if x in score]
    if "vt" in score and single:
        worse = score["vt"] < min(score[x] for x in single)
        out.append(f"Multi-hop (vt) is {'more' if worse else 'not more'} fragile than single retrieval "
                   f"({', '.join(single)}).")
    if "cwe" in score and single:
        worse = score["cwe"] < min(score[x] for x in single)
        out.append(f"Aggregation (cwe) is {'more' if worse else 'not more'} fragile than single retrieval "
                   f"({', '.join(single)}).")
    weak = {x: [bk["dense"][x]["correct"] / bk["dense"][x]["n"] for bk in t["buckets"]] for x in tasks}
    weak = {x: v for x, v in weak.items() if min(v) < 0.9}
    if weak:
        out.append("Caution: " + "; ".join(f"{x}'s dense accuracy is only {min(v):.2f}-{max(v):.2f}" for x, v in weak.items())
                   + ", so its floor (relative to dense) is loose and its score partly measures noise around a weak "
                   "baseline (its sparse accuracy sometimes exceeds dense).")
    per_task_max = {x: [bk["summary"][x]["max_sparsity"] for bk in t["buckets"]] for x in tasks}
    out.append("Highest tolerated sparsity per task by bucket: "
               + "; ".join(f"{x} {', '.join(f'{v:.2f}' for v in per_task_max[x])}" for x in tasks) + ".")
    return out


# ---------------------------------------------------------------------------------------------- policies


def _rule_rows(r: dict[str, Any], rule: str) -> str:
    """The cost and draws-passed ranges of the extra rows searched under `rule` (their names say which)."""
    rows = [r["policies"][k] for k in r.get("extra", []) if rule in r["policies"][k]["name"]]
    if not rows:
        return ""
    costs = [p["heldout"]["cost"] for p in rows]
    passes = [p["held_out_passes"] for p in rows]
    return (f"cost {min(costs):.2f}-{max(costs):.2f}, passed {min(passes)}-{max(passes)} of "
            f"{1 + len(r.get('fresh_seeds', []))} held-out draws")


def _rule_ranges(results: list[dict[str, Any]], *rules: tuple[str, str]) -> str:
    """``; LABEL cost ..., passed ...`` for each (label, marker) whose demo extra rows exist (`_rule_rows`)."""
    return "".join(f"; {label} {rows}" for r in results if r["model"] == "demo"
                   for label, marker in rules if (rows := _rule_rows(r, marker)))


def policies_section(results: list[dict[str, Any]]) -> str:
    lines = ["## Same floor, three policies", "",
             "Each policy is chosen on the search workload (the profile by `sparsetune search`, which explores 2/3 "
             "of each bucket and confirms its cheapest candidates on the other 1/3; (b), (c) and the extra rows by "
             "cost order over the grid: the cheapest candidate meeting the floor in every bucket, judged as the "
             f"search judges it: on the {B.CONFIDENCE:.0%} lower confidence bound over the whole workload, no task "
             "broken, gains not paying for losses) and judged on held-out data neither choice saw "
             f"(`sparsetune/demo/heldout.jsonl` and {len(B.FRESH_SEEDS)} fresh draws of the same tasks, seeds "
             + ", ".join(map(str, B.FRESH_SEEDS)) + "), as `apply --check` judges: "
             f"the point estimate against {B.FLOOR} x dense, no task below it beyond noise. The lower bound is the "
             f"floor's {B.CONFIDENCE:.0%} score bound of the sparse accuracy. Attention cost: "
             "dense-equivalent FLOPs of the prefills from the cost model (`sparsetune.timing.cost_model`: kept "
             "blocks plus block selection), weighted by the held-out length mix, relative to dense. "
             "**No GPU was available: no measured GPU time.**", ""]
    for r in results:
        lines += policies_model(r)
    lines += ["Notes:", "",
              "- Candidates: fixed keep = the grid (block {32, 64, 128} x keep {"
              + ", ".join(f"{k:g}" for k in B.KEEPS) + "} x sink {0, 1, 2} x local {1, 2}); token budgets = tokens {"
              + ", ".join(map(str, B.TOKENS)) + "} x the same block, sink, local (keep = tokens / KV length, dense "
              "where tokens >= length); gated = dense up to {" + ", ".join(map(str, B.GATES)) + "} tokens, then a "
              "fixed grid budget.",
              "- (b') and (a*) are context, not part of the target: (b') is what serving engines do today (one "
              "fixed budget with a dense-below-threshold gate); (a*) is the best per-bucket choice an exhaustive "
              "grid finds on the search split, i.e. what a perfect per-bucket search could pick.",
              "- n = 160 per split and bucket. A miss is marked *within noise* when the upper confidence bound of "
              "the sparse accuracy (same level) is still at or above the floor, *beyond noise* when even that is "
              "below it.",
              "- Until commit 20b01ef the simple policies were chosen on the point estimate over the search "
              "workload, a looser rule than the search's; so chosen, (b) cost 0.745, (c) 0.524 and (b') 0.535, "
              "with the profile shipped then (the 'profile shipped before' row) at 0.603 (commit b3c8b4b's "
              "RESULTS.md). Judged as the search judges, cheaper simple budgets no longer pass.",
              "- Gains do not pay for losses (commit 8d55041): the search, and so the simple policies chosen "
              "as it judges, count only the answers sparse keeps from dense (`profile.floor.kept`). Before, a "
              "budget that lost cwe answers on some samples and gained them on others was judged on the net. The "
              "'netted' rows are README searches (seeds 0, 1, 2) under that rule (written by commit 4caca44's "
              "code), the 'gains do not count' rows the same searches under this one"
              + _rule_ranges(results, ("netted:", "netted"), ("gains do not count:", "gains do not count"))
              + ". The simple policies chose the same budgets under both rules. Whether a policy passes a draw is "
              "the outcome at one bucket of 160 samples, so one draw in 7 is within luck.",
              "- Short buckets dense, and family probes (session 13): a bucket holding under 2% of the workload's "
              "dense attention FLOPs is left dense, unsearched (`--min-share`; the demo's 254-256 bucket holds "
              "1.2%, and every miss of the 'gains do not count' rows was there); a trial runs only if the confirmed "
              "budget is not within 5% of its cost; and a family whose candidate failed confirmation is probed "
              "at the largest keep that could still win (since session 14 part of bisection: every family's "
              "bracket reaches up to the dense trial, `search/refine.midpoint`). (a) is the README command's "
              "profile at seed 0 with this code, the 'README search now' rows seeds 1 and 2"
              + _rule_ranges(results, ("short bucket dense without probes:", "no probes"),
                             ("now (seeds 1, 2):", "search now"))
              + ". Seed 0 chose the same profile with and without probes.",
              "- The second model (`scripts/train_demo.py --seed 1`) has not been rerun with confirmation and the "
              "score bound yet; its point-estimate results (the old rules) are in commit aa1d2e9's RESULTS.md.",
              "- Cost is for the prefill at each bucket's prompt length; the profile is looked up exactly as "
              "serving does (`Profile.lookup(kv_len)`), so its `min_len` (shorter prompts run dense) counts.", ""]
    return "\n".join(lines)


def shortfall(bk: dict[str, Any]) -> int:
    """Samples a bucket is short of its floor (0 when met)."""
    need = math.ceil(bk["target"] * bk["n"] - 1e-9)
    return max(0, need - round(bk["sparse"] * bk["n"]))


def noise(bk: dict[str, Any]) -> str:
    ub = bk.get("upper_bound")
    if ub is None:
        return ""
    return (f"; within noise: the {B.CONFIDENCE:.0%} upper bound {ub:.3f} is above the floor" if ub >= bk["target"]
            else f"; beyond noise: even the {B.CONFIDENCE:.0%} upper bound {ub:.3f} is below the floor")


def policy_findings(r: dict[str, Any]) -> list[str]:
    pols = r["policies"]
    a, b, c = (pols[k]["heldout"] for k in ("a", "b", "c"))
    g, grid = pols["b_gated"]["heldout"], pols["a_grid"]["heldout"]
    out = [f"(a) costs {a['cost']:.3f} of dense attention FLOPs on the held-out mix, (b) {b['cost']:.3f}: (a) needs "
           f"{relation(a['cost'], b['cost'])} (b)."]
    missed = [bk for bk in a["buckets"] if not bk["met"]]
    if missed:
        out.append("On held-out data (a) misses the floor at " + ", ".join(
            f"{bk['max_len']} tokens ({bk['sparse']:.3f} against a floor of {bk['target']:.3f}: "
            f"{shortfall(bk)} of {bk['n']} samples short" + noise(bk) + ")" for bk in missed) + ".")
    else:
        out.append("On held-out data (a) meets the floor in every bucket.")
    out.append(f"(c), the fixed token budget, costs {c['cost']:.3f} ((a) needs {relation(a['cost'], c['cost'])} it) and "
               f"{'meets the floor everywhere' if c['all_met'] else 'misses the floor in ' + str(sum(not x['met'] for x in c['buckets'])) + ' held-out bucket(s)'}; "
               f"(b'), fixed keep with a dense gate, costs {g['cost']:.3f} and "
               f"{'meets it everywhere' if g['all_met'] else 'misses it somewhere'}.")
    trials = pols["a"]["policy"].get("trials_per_bucket")
    out.append(f"The exhaustive per-bucket grid optimum (a*) costs {grid['cost']:.3f}, so (a) needs "
               f"{relation(a['cost'], grid['cost'])} the best per-bucket choice the grid holds"
               + (f" ({trials} search trials per bucket)" if trials else "")
               + f"; (a*) {'holds' if grid['all_met'] else 'does not hold'} the floor on held-out data either.")
    held = [pols[k]["name"] for k in ("a", "b", "c", "b_gated", "a_grid", *r.get("extra", [])) if pols[k]["heldout"]["all_met"]]
    out.append("Policies at or above the floor in every held-out bucket: " + (", ".join(held) if held else "none") + ".")
    return out


def policies_model(r: dict[str, Any], reproduce: str | None = None) -> list[str]:
    h = r["headline"]
    pols = r["policies"]
    order = ["a", "b", "c", "b_gated", "a_grid", *r.get("extra", [])]
    out = [f"### {r['model']} model" + ("" if r["model"] == "demo" else f" (`{r['model_arg']}`)"), ""]
    if r["model"] == "demo":
        out += [f"![three policies](out/policies_{r['model']}.png)", ""]
    out += [f"**Target (every held-out bucket at or above the floor, (a) <= 0.7x (b), and no more than the cheapest "
            f"of (b') and (c) that also holds): {'MET' if h['target_met'] else 'MISSED'}.** "
            + " ".join(policy_findings(r)), ""]
    header = ["policy", "what it is", "cost (held-out mix)"] + [f"{e}: acc / dense (LB); cost"
                                                               for e in r["edges"]] + ["all buckets >= floor",
                                                                                       "held-out draws passed"]
    rows = []
    for k in order:
        p = pols[k]
        cells = []
        for bk in p["heldout"]["buckets"]:
            lb = "-" if bk["lower_bound"] is None else f"{bk['lower_bound']:.2f}"
            ub = bk.get("upper_bound")
            miss = "" if bk["met"] else (" **below floor**" + ("" if ub is None else
                                          " (within noise)" if ub >= bk["target"] else " (beyond noise)"))
            cells.append(f"{bk['sparse']:.3f} / {bk['dense']:.3f} ({lb}){miss}; {bk['cost']:.2f}")
        rows.append([p["name"], p["policy"]["label"], f"{p['heldout']['cost']:.3f}"] + cells
                    + ["yes" if p["heldout"]["all_met"] else "no",
                       f"{p.get('held_out_passes', '-')} of {1 + len(r.get('fresh_seeds', []))}"])
    out.append(md_table(header, rows))
    out += ["", "On the search split (where each was chosen):", ""]
    rows = []
    for k in order:
        p = pols[k]
        rows.append([p["name"], f"{p['search']['cost']:.3f}"]
                    + [f"{bk['sparse']:.3f} / {bk['dense']:.3f}" + ("" if bk["met"] else " (below)")
                       for bk in p["search"]["buckets"]]
                    + ["yes" if p["search"]["all_met"] else "no", p["candidates_checked"] or "-"])
    out.append(md_table(["policy", "cost (search mix)"] + [f"{e}: acc / dense" for e in r["edges"]]
                        + ["all >= floor", "candidates evaluated"], rows))
    simple = r.get("simple_policies_judged")
    reused = "" if simple is None else (
        f"\n- (b), (c), (b') and (a*) as judged on {simple['date']} (commit {simple['commit']}, "
        f"{simple['machine']}), reused (`--reuse-simple`): they do not depend on the search code")
    out += ["", provenance(r["meta"], f"; {r['chunks_evaluated']} chunks of 8 samples evaluated in this run "
                                      "(the rest came from the cache)" + reused, reproduce=reproduce), ""]
    if r["model"] != "demo":
        out += [f"Plot: [out/policies_{r['model']}.png](out/policies_{r['model']}.png).", ""]
    return out


# ---------------------------------------------------------------------------------------------- efficiency


def efficiency_section(e: dict[str, Any], search_trials: int | None = None) -> str:
    size, budget, cells = e["grid_size"], e["budget"], e["cells"]
    sp = e["space"]
    lines = ["## Search efficiency", "",
             f"Trials until the best feasible cost found is within {e['within']:.0%} of the exhaustive grid's best "
             f"feasible point, per bucket, over {e['seeds']} seeds; {e['model']} model, search split (32 samples per "
             f"bucket). The grid: block {{{', '.join(map(str, sp['block_size']))}}} x keep "
             f"{{{', '.join(f'{k:g}' for k in sp['keep'])}}} x sink {{{', '.join(map(str, sp['sink']))}}} x local "
             f"{{{', '.join(map(str, sp['local']))}}} = {cells} parameter cells, {size} distinct evaluations per bucket "
             f"(keep 1 is dense whatever the rest). Target: at most {e['target_share']:.0%} of them, i.e. {budget} "
             "trials. TPE is set up exactly as `sparsetune search` sets it up (dense trial enqueued first, "
             "`TPESampler(n_startup_trials=5, multivariate=True)` reseeded per trial, the floor as "
             "`trial.set_constraint`), over the same discrete space; Optuna's `RandomSampler` gets the same study.", "",
             f"![search efficiency](out/search_efficiency_{e['model']}.png)", ""]
    header = ["bucket", "grid best: cost (budget)", "points within 5%", "TPE: trials per seed",
              "TPE median", f"TPE seeds within {budget}", "random: trials per seed", "random median",
              f"random seeds within {budget}", "random, exact: expected trials / P(within budget)"]
    anchored = all("anchored" in bk for bk in e["buckets"])
    if anchored:
        a_budget = e["buckets"][0]["anchored"]["budget"]
        header += ["anchored search: evaluations per seed", "anchored median", f"anchored seeds within {a_budget}"]
    if search_trials:
        header.append(f"TPE seeds within {search_trials} (the demo profile's trials)")
    rows = []
    verdicts = []

    def trials(xs: list[int | None], cap: int) -> str:
        return ", ".join(f">{cap}" if x is None else str(x) for x in xs)

    def med(x: float | None, cap: int) -> str:
        return f">{cap}" if x is None else f"{x:g}"

    for bk in e["buckets"]:
        g = bk["best"]
        t, r = bk["tpe"], bk["random"]
        gb = "dense" if g["keep"] >= 1 else f"keep {g['keep']:g}, block {g['block_size']}, sink {g['sink']}, local {g['local']}"
        rows.append([bk["max_len"], f"{g['cost']:.3f} ({gb})", f"{bk['within_points']} ({bk['within_cells']} of {cells} cells)",
                     trials(t["trials_to_reach"], t["cap"]), med(t["median"], t["cap"]),
                     f"{t['reached_within_budget']}/{e['seeds']}",
                     trials(r["trials_to_reach"], r["cap"]), med(r["median"], r["cap"]),
                     f"{r['reached_within_budget']}/{e['seeds']}",
                     f"{r['expected_trials']:.0f} / {r['p_within_budget']:.2f}"]
                    + ([trials(bk["anchored"]["trials_to_reach"], bk["anchored"]["cap"]),
                        med(bk["anchored"]["median"], bk["anchored"]["cap"]),
                        f"{bk['anchored']['reached_within_budget']}/{e['seeds']}"] if anchored else [])
                    + ([f"{sum(x is not None and x <= search_trials for x in t['trials_to_reach'])}/{e['seeds']}"]
                       if search_trials else []))
        verdicts.append((bk["max_len"], t["median"], t["reached_within_budget"], r["median"]))
    lines.append(md_table(header, rows))
    met = [v for v in verdicts if v[1] is not None and v[1] <= budget]
    all_seeds = sum(v[2] for v in verdicts)
    lines += ["", f"**Target (TPE needs at most {budget} trials = {e['target_share']:.0%} of the grid's {size} "
              f"evaluations, median over seeds, every bucket): {'MET' if len(met) == len(verdicts) else 'MISSED'}: "
              f"the median is within the budget in {len(met)} of {len(verdicts)} buckets"
              + ("" if len(met) == len(verdicts) else " (not at " + ", ".join(
                  str(v[0]) for v in verdicts if v not in met) + " tokens)")
              + f"; per seed, {all_seeds} of {e['seeds'] * len(verdicts)} (bucket, seed) runs got there within the "
              "budget.** "
              + "; ".join(f"{m}: TPE median {med(tm, size)} ({'-' if tm is None else pct(tm / size)} of the grid), "
                          f"random median {med(rm, RANDOM_CAP)}"
                          for m, tm, tr, rm in verdicts) + ".", "",
              *([f"**Anchored search (issue 22: at most {a_budget} evaluations = 20% of the grid, every bucket): "
                 + ("MET" if all(bk["anchored"]["median"] is not None and bk["anchored"]["median"] <= a_budget
                                 for bk in e["buckets"]) else "MISSED")
                 + "** (median evaluations per bucket: "
                 + ", ".join(f"{bk['max_len']}: {med(bk['anchored']['median'], bk['anchored']['cap'])}"
                             for bk in e["buckets"])
                 + "). The anchored study is the product's: the dense trial, then the anchors (fixed keeps and token "
                 "budgets at the bucket's length, the shorter bucket's best carried as a keep and as tokens; keeps "
                 "snapped to the grid) in bisection order, then TPE, with `refine.midpoint`'s bisection trials between its "
                 "suggestions (midpoints snapped to the grid's keeps); trials that cannot win (costlier than a "
                 "feasible one, or keeping no more than a miss of their family) are pruned and repeated points "
                 "reused, and neither counts as an evaluation, as in `sparsetune search`.", ""] if anchored else []),
              "Notes:", "",
              "- How hard the goal is depends on how many points lie within 5% of the best: adjacent grid keeps differ "
              "by about 1.5x in cost, so a bucket with one point within 5% asks the sampler to find that exact cell "
              f"among {cells} (random: {cells} trials expected).",
              "- A trial counts as one evaluation even when the sampler repeats a point (the search would evaluate it "
              f"again); the enqueued dense trial is trial 1. `>N`: the seed did not get there within N trials (TPE "
              f"runs up to the grid's size, {size}).",
              "- keep is suggested as an index into the keep grid (ordered, like search's log-scale float keep), "
              "block size as a categorical, sink and local as integers, as in `SearchSpace.suggest`.",
              "- Exact and lazy: the grid's best is found by evaluating points in cost order (cost is known before "
              "evaluating: topk block counts do not depend on content) until the first feasible one; every point "
              "TPE suggests is evaluated; random studies need only their points within 5% of the best (all "
              "evaluated by the scan), since the random sampler ignores answers. Points evaluated per bucket: "
              + ", ".join(f"{bk['max_len']}: {bk['evaluated_points']}" for bk in e["buckets"])
              + f" of {size}; {e['chunks_evaluated']} chunks of 8 samples were evaluated in this run (the rest came "
              "from the cache).",
              "- Cost = relative attention FLOPs of the bucket's prefills (cost model, no GPU); feasible = accuracy >= "
              f"{B.FLOOR} x dense on the bucket's samples, with the search's early stop.", "",
              provenance(e["meta"])]
    times = run_times()
    if times:
        lines += ["", "Run time of all three sections (both models):", "", times]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- README


def readme_section(r: dict[str, Any]) -> str:
    """README's headline: the searched profile against the simple policies, judged on data it never saw."""
    h = r["headline"]
    pols = r["policies"]
    a, b, c, g = (pols[k]["heldout"] for k in ("a", "b", "c", "b_gated"))
    draws = 1 + len(r.get("fresh_seeds", []))
    n = a["buckets"][0]["n"]
    sparse = [bk for bk in pols["a"]["policy"]["buckets"] if not bk["dense"]]

    def verdict(p: dict[str, Any]) -> str:
        return "holds the floor in every bucket" if p["all_met"] else \
            f"misses it in {sum(not q['met'] for q in p['buckets'])} bucket(s)"

    lines = ["## Why per-length budgets, and why confirmation", "",
             "How much sparsity a request tolerates depends on its length and its task, so one budget for every "
             "length either breaks short requests or spends needless compute on long ones; and a budget chosen as "
             "the cheapest that passed on the samples searched passed partly by luck. Measured on the demo model "
             f"and workload ({r['search_samples'] // len(r['edges'])} samples per bucket: 2/3 searched, 1/3 for "
             f"confirmation), floor {r['floor']} x dense per bucket at {r['confidence']:.0%} confidence, judged on "
             f"held-out data the search never saw ({n} samples per bucket), attention cost from the FLOP cost model "
             "(no GPU), reproduced by `.venv/bin/python benchmarks/policies.py --model demo --profile "
             "profiles/demo.yaml` ([benchmarks/RESULTS.md](benchmarks/RESULTS.md) has the tables):", "",
             f"- **The searched profile** (`sparsetune search --trials {pols['a']['policy'].get('trials_per_bucket', '?')}`"
             f", sparse in {len(sparse)} of {len(pols['a']['policy']['buckets'])} buckets) costs {a['cost']:.3f} of "
             f"dense attention FLOPs on the held-out mix and {verdict(a)}; it passes on "
             f"{pols['a']['held_out_passes']} of {draws} held-out draws.",
             f"- **Simple policies, chosen by the same rule on the whole search workload:** (b) the best fixed keep "
             f"({pols['b']['policy']['label']}) costs {b['cost']:.3f} and {verdict(b)}; (b') fixed keep with a dense "
             f"gate costs {g['cost']:.3f} and {verdict(g)}; (c) the best fixed token budget costs {c['cost']:.3f} "
             f"and {verdict(c)}.",
             f"- **Target** (holds everywhere, <= 0.7x (b), and no more than the cheapest of (b') and (c) that "
             f"holds): **{'met' if h['target_met'] else 'missed'}**: (a) costs {h['cost_ratio_vs_fixed_keep']:.2f}x "
             "(b)" + ("" if h["cheapest_holding_simple"] is None else
                      f"; the cheapest simple policy that holds costs {h['cheapest_holding_simple']:.3f}") + ".",
             f"- The per-bucket grid optimum (a*), chosen on the search workload without confirmation, costs "
             f"{pols['a_grid']['heldout']['cost']:.3f} and passes on {pols['a_grid']['held_out_passes']} of {draws} "
             "held-out draws" + (": the winner's curse that confirmation guards against"
                                 if pols['a_grid']['held_out_passes'] < pols['a']['held_out_passes'] else "")
             + ". Draws passed: "
             + ", ".join(f"{pols[k]['short']} {pols[k]['held_out_passes']}" for k in ("a", "b", "c", "b_gated"))
             + f" of {draws}.",
             "- Caveats: a 2-layer demo model whose aggregation task (cwe) flips answers under most budgets; the "
             "profile's budgets come from 20 TPE trials per bucket, the simple policies from a fixed grid scanned "
             "in cost order; FLOP cost model rather than GPU time.", "",
             f"![same floor, three policies](benchmarks/out/policies_{r['model']}.png)"]
    return "\n".join(lines)


def main() -> None:
    tol = load("tolerance_demo.json")
    eff = load("search_efficiency_demo.json")
    # The second model's policies were judged under the old point-estimate rule: not rerun with confirmation yet.
    pols = [x for x in (load("policies_demo.json"),) if x is not None and "fresh_seeds" in x]
    if tol:
        B.splice(B.RESULTS, "tolerance", tolerance_section(tol))
    if pols:
        B.splice(B.RESULTS, "policies", policies_section(pols))
    if eff:
        demo_pol = next((p for p in pols if p["model"] == eff["model"]), None)
        trials = demo_pol["policies"]["a"]["policy"].get("trials_per_bucket") if demo_pol else None
        B.splice(B.RESULTS, "search-efficiency", efficiency_section(eff, trials))
    demo = next((p for p in pols if p["model"] == "demo"), None)
    if demo is not None:
        B.splice(B.README, "why-per-length", readme_section(demo), header="", before="## Development")
    print(f"updated {B.RESULTS} and {B.README}")


if __name__ == "__main__":
    main()

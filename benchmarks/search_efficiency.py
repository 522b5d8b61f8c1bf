"""Search efficiency: trials TPE needs to come within 5% of the exhaustive grid's best feasible cost, per bucket.

    .venv/bin/python benchmarks/search_efficiency.py [--model demo] [--seeds 10] [--recorded GRID.json]

The grid is every (block_size, keep, sink, local) of `_bench` (3 x 9 sparse keeps x 3 x 2 = 162 sparse
points plus dense = 163 distinct evaluations per bucket). Both samplers search exactly this space, set up as
search.py sets up its studies: the dense trial enqueued first; TPE with n_startup_trials=5, multivariate,
reseeded per trial from seed and trial count; the floor as ``trial.set_constraint("floor", target -
best-case accuracy)``; objective = relative attention cost. keep is suggested as an index into the keep
grid (ordered, like search's log-scale float), block_size as a categorical, sink and local as integers.

Evaluations are exact and lazy (a 2-core machine cannot afford 163 x 4 full evaluations at 2048 tokens):
- The grid's best feasible point: points sorted by cost (known without evaluating: the cost model needs
  only the mask's block counts, which do not depend on content), evaluated in that order until the first
  feasible one. That one is the cheapest feasible point of the whole grid. The scan goes on through every
  point within 5% of it, so the goal region is known exactly.
- TPE: every point it suggests is evaluated (with search.py's early stop), since its next suggestion
  depends on the answer. Each study runs until it reaches the goal or for as many trials as the grid has.
- Random: the sampler ignores answers, so only its points within 5% of the best (all already evaluated by
  the scan) matter for reaching the goal; the others are not evaluated. Its exact expectation is also
  given: with m of the 180 parameter cells in the goal region, P(reached by trial t) = 1 - (1 - m/180)^(t-1).
- The highest sparsity that meets the floor anywhere in the grid (for the tolerance map): points sorted by
  sparsity, evaluated until the first feasible one.
Evaluations are cached (benchmarks/out/cache/), so seeds and reruns are free. The cache is not shipped;
`--recorded benchmarks/out/search_grid_<model>.json` (the rows an earlier run wrote) stands in for it: a
recorded point is not evaluated again, and only points no earlier run visited are.

Writes benchmarks/out/search_efficiency_<model>.json, search_grid_<model>.json and a plot.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import _bench as B

WITHIN = 0.05  # "reached": best feasible cost <= (1 + WITHIN) x the grid's best feasible cost
TARGET_SHARE = 0.25  # target: at most this share of the grid's evaluations (TPE alone, issue 5)
ANCHORED_SHARE = 0.20  # the anchored search's target (issue 22): evaluations, pruned and reused trials aside
RANDOM_CAP = 3000  # random studies cost nothing to run long (no evaluation outside the goal region)


class LazyGrid:
    """One bucket's grid: costs up front, accuracy evaluated on demand (cached on disk by the Bench)."""

    def __init__(self, bench: B.Bench, b: int, recorded: dict[tuple, dict[str, Any]] | None = None) -> None:
        self.bench, self.b = bench, b
        self.recorded = recorded or {}  # rows of an earlier run, by (max_len, block_size, keep, sink, local)
        self.points = B.grid_points()
        self.dense = self.points[0]
        self.cost = {p: bench.cost(b, p) for p in self.points}
        self.sparsity = {p: bench.sparsity(b, p) for p in self.points}
        self.rows: dict[B.Fixed, dict[str, Any]] = {}
        self.evaluated = 0  # points evaluated here (not recorded)

    def point(self, block: int, keep: float, sink: int, local: int) -> B.Fixed:
        return self.dense if keep >= 1.0 else B.Fixed(block, keep, sink, local)

    def row(self, p: B.Fixed) -> dict[str, Any]:
        known = self.recorded.get((B.EDGES[self.b], p.block_size, p.keep, p.sink, p.local))
        if p not in self.rows and known is not None:
            self.rows[p] = known
        if p not in self.rows:
            self.evaluated += 1
            r = self.bench.result(self.b, p, "floor")
            self.rows[p] = {"max_len": B.EDGES[self.b], "block_size": p.block_size, "keep": p.keep, "sink": p.sink,
                            "local": p.local, "cost": round(self.cost[p], 6), "sparsity": round(self.sparsity[p], 4),
                            "feasible": r.feasible, "accuracy": round(r.accuracy, 4) if r.complete else None,
                            "best_case": round(r.best_case, 4), "target": round(r.target(), 4),
                            "dense_accuracy": round(r.dense_accuracy, 4),
                            "evaluated_samples": sum(c is not None for c in r.correct), "n": r.n}
        return self.rows[p]

    def scan(self) -> dict[str, Any]:
        """The cheapest feasible point (cost order), every point within WITHIN of it, the sparsest feasible one."""
        order = sorted(self.points, key=lambda p: (self.cost[p], p.label))
        checked = 0
        best = None
        for p in order:
            checked += 1
            if self.row(p)["feasible"]:
                best = p
                break
        assert best is not None  # dense is always feasible
        goal = self.cost[best] * (1 + WITHIN)
        region = [p for p in order if self.cost[p] <= goal + 1e-12]
        within = [p for p in region if self.row(p)["feasible"]]
        sparsest = next(p for p in sorted(self.points, key=lambda p: (-self.sparsity[p], self.cost[p], p.label))
                        if self.row(p)["feasible"])
        cells = 0  # cells of the 180-cell parameter space (keep 1 cells all map to dense) in the goal region
        for bs in B.BLOCKS:
            for k in B.KEEPS:
                for s in B.SINKS:
                    for l in B.LOCALS:
                        cells += self.point(bs, k, s, l) in within
        return {"best": self.row(best), "goal": goal, "checked_to_best": checked, "within_points": len(within),
                "within_cells": cells, "region_points": len(region), "sparsest": self.row(sparsest)}


def _suggest(trial: Any, grid: LazyGrid) -> B.Fixed:
    """A grid point, suggested as `SearchSpace.suggest` orders its parameters (keep as an index into the grid)."""
    block = trial.suggest_categorical("block_size", list(B.BLOCKS))
    sink = trial.suggest_int("sink", min(B.SINKS), max(B.SINKS))
    local = trial.suggest_int("local", min(B.LOCALS), max(B.LOCALS))
    keep = B.KEEPS[trial.suggest_int("keep_index", 0, len(B.KEEPS) - 1)]
    return grid.point(block, keep, sink, local)


def replay(grid: LazyGrid, sampler: str, seed: int, cap: int, goal: float) -> list[dict[str, Any]]:
    """One study over the grid; stops at the first trial that reaches the goal, or after `cap` trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    seq: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        p = _suggest(trial, grid)
        cost = grid.cost[p]
        if sampler == "random" and cost > goal + 1e-12:
            # cannot reach the goal whatever its accuracy, and the random sampler ignores answers
            seq.append({"cost": cost, "feasible": None, "point": p.label})
            trial.set_constraint("floor", 0.0)
            return cost
        row = grid.row(p)
        seq.append({"cost": cost, "feasible": row["feasible"], "point": p.label})
        trial.set_constraint("floor", row["target"] - row["best_case"])
        return cost

    study = optuna.create_study(direction="minimize",
                                sampler=optuna.samplers.RandomSampler(seed=seed) if sampler == "random" else None)
    study.enqueue_trial({"block_size": 64, "sink": 0, "local": 1, "keep_index": 0})  # search.py's dense trial
    for done in range(cap):
        if sampler == "tpe":  # exactly search.py's sampler and reseeding
            study.sampler = optuna.samplers.TPESampler(seed=seed * 100_003 + done, n_startup_trials=5,
                                                       multivariate=True, warn_independent_sampling=False)
        study.optimize(objective, n_trials=1)
        if seq[-1]["feasible"] and seq[-1]["cost"] <= goal + 1e-12:
            break
    return seq


def _snap(keep: float) -> float:
    """The grid keep nearest `keep` on a log scale (anchors are keeps and token budgets; the grid is discrete)."""
    import math

    return min(B.KEEPS, key=lambda k: (abs(math.log(k) - math.log(keep)), k))


def replay_anchored(grid: LazyGrid, seed: int, cap: int, goal: float, rep_len: int,
                    carried: B.Fixed | None = None, from_len: int | None = None) -> list[dict[str, Any]]:
    """The product's study on the grid: the dense trial, the anchors in bisection order (`SearchSpace.anchor_params`
    at this length, plus the shorter bucket's best carried as search carries a confirmed budget, keeps snapped to
    the grid), then TPE, with `refine.midpoint`'s bisection trials enqueued between them as search enqueues
    them (midpoints snapped to the grid's keeps). As `search/objective.py` rules, a trial that cannot win is pruned (it
    would not save `refine.COST_TOLERANCE` on a feasible one, or keeps no more than a miss of its family:
    `confirm.keeps_no_more`) and a
    point already measured is reused; neither is an evaluation. Returns the evaluated trials until one reaches the
    goal (or `cap` evaluations)."""
    import optuna

    from sparsetune.search.confirm import keeps_no_more
    from sparsetune.search.refine import Outcome, midpoint, worth_below
    from sparsetune.search.space import SearchSpace
    from sparsetune.search.study import ATTEMPTS

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    keeps = list(B.KEEPS)
    space = SearchSpace(block_sizes=B.BLOCKS)
    carry = [] if carried is None or carried.keep >= 1 else space.carried(
        {"block_size": carried.block_size, "sink": carried.sink, "local": carried.local, "keep": carried.keep},
        from_len, rep_len)
    seq: list[dict[str, Any]] = []
    state: dict[str, Any] = {"best": float("inf"), "outcomes": []}  # outcomes: every measured sparse point

    def objective(trial: optuna.Trial) -> float:
        p = _suggest(trial, grid)
        block, keep, sink, local = p.block_size, p.keep, p.sink, p.local
        cost = grid.cost[p]
        params = {"block_size": block, "sink": sink, "local": local, "keep": keep}
        budget = space.budget_of(params)
        below_miss = any(not o.held and keeps_no_more(budget, o.budget) for o in state["outcomes"])
        if cost >= worth_below(state["best"]) or below_miss:
            raise optuna.TrialPruned()  # cannot win by COST_TOLERANCE: not evaluated, not counted
        if any(t["point"] == p.label for t in seq):
            row = grid.row(p)  # reused: the measurement is already in the study
        else:
            row = grid.row(p)
            seq.append({"cost": cost, "feasible": row["feasible"], "point": p.label})
        if row["feasible"]:
            state["best"] = min(state["best"], cost)
        if keep < 1:
            state["outcomes"].append(Outcome(trial.number, params, budget, bool(row["feasible"])))
        trial.set_constraint("floor", row["target"] - row["best_case"])
        return cost

    def grid_cost(b: Any) -> float:
        return grid.cost[grid.point(b.block_size, _snap(b.ratio), b.sink, b.local)]

    def refinement() -> dict[str, Any] | None:
        """`refine.midpoint` as the search asks it between trials, the midpoint snapped to the grid's keeps."""
        best = state["best"] if state["best"] < float("inf") else None
        tried = {tuple(sorted(o.params.items())) for o in state["outcomes"]}
        found = midpoint(state["outcomes"], grid_cost, best, tried, dense=0)
        if found is None:
            return None
        params = found.params
        return {**{k: params[k] for k in ("block_size", "sink", "local")},
                "keep_index": keeps.index(_snap(params["keep"]))}

    study = optuna.create_study(direction="minimize")
    study.enqueue_trial({"block_size": 64, "sink": 0, "local": 1, "keep_index": 0})  # search.py's dense trial
    for params in space.anchor_params(rep_len, carry):
        study.enqueue_trial({"block_size": params["block_size"], "sink": params["sink"], "local": params["local"],
                             "keep_index": keeps.index(_snap(params["keep"]))})
    # Pruned trials are free: the loop is bound by evaluations, and, as a study is (`study.ATTEMPTS`), by settled
    # trials, so a seed whose goal is out of reach (a feasible point below a miss of its family) ends.
    for done in range(ATTEMPTS * cap):
        if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            refined = refinement()
            if refined is not None:
                study.enqueue_trial(refined)
        study.sampler = optuna.samplers.TPESampler(seed=seed * 100_003 + done, n_startup_trials=5,
                                                   multivariate=True, warn_independent_sampling=False)
        study.optimize(objective, n_trials=1)
        if seq and seq[-1]["feasible"] and seq[-1]["cost"] <= goal + 1e-12:
            break
        if len(seq) >= cap:
            break
    return seq


def _none_if_inf(x: float) -> float | None:
    return None if x == float("inf") else x


def trials_to_reach(seq: list[dict[str, Any]], goal: float) -> int | None:
    for i, t in enumerate(seq, 1):
        if t["feasible"] and t["cost"] <= goal + 1e-12:
            return i
    return None


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def plot(result: dict[str, Any], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = result["buckets"]
    size, budget = result["grid_size"], result["budget"]
    fig, axes = plt.subplots(1, len(buckets), figsize=(3.8 * len(buckets), 3.3), squeeze=False, sharey=True)
    xs = list(range(1, size + 1))
    for ax, bk in zip(axes[0], buckets):
        for name, color in (("tpe", "tab:blue"), ("random", "tab:orange")):
            reach = bk[name]["trials_to_reach"]
            frac = [sum(r is not None and r <= x for r in reach) / len(reach) for x in xs]
            ax.step(xs, frac, where="post", color=color, label=f"{'TPE' if name == 'tpe' else 'random'} ({len(reach)} seeds)")
        m = bk["within_cells"]
        ax.plot(xs, [1 - (1 - m / 180) ** (x - 1) for x in xs], color="tab:orange", ls=":", lw=1,
                label="random, exact expectation")
        ax.axvline(budget, color="red", ls="--", lw=1, label=f"25% of grid ({budget})")
        ax.set_title(f"{bk['max_len']} tokens: best cost {bk['best']['cost']:.3f}, {bk['within_points']} pts within 5%",
                     fontsize=8.5)
        ax.set_xlabel("trials")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share of seeds within 5% of grid best")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{result['model']}: trials to reach the grid's best feasible cost (+5%), TPE vs random", fontsize=10)
    B.save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--recorded", help="a search_grid_<model>.json of an earlier run: its points are not evaluated")
    args = ap.parse_args()
    recorded = {} if args.recorded is None else {
        (r["max_len"], r["block_size"], r["keep"], r["sink"], r["local"]): r
        for r in json.loads(Path(args.recorded).read_text())["rows"]}
    started = time.time()
    bench = B.Bench(args.model, "search")
    name = B.model_label(args.model)
    size = len(B.grid_points())
    budget = int(TARGET_SHARE * size)
    buckets, grids = [], []
    previous = None  # the shorter bucket's best point: what an anchored search carries forward
    for b, edge in enumerate(B.EDGES):
        t0 = time.time()
        grid = LazyGrid(bench, b, recorded)
        entry: dict[str, Any] = {"max_len": edge, **grid.scan()}
        entry["scan_evaluated_points"] = len(grid.rows)
        goal = entry["goal"]
        for sampler, cap in (("tpe", size), ("random", RANDOM_CAP), ("anchored", size)):
            reach = []
            for seed in range(args.seeds):
                if sampler == "anchored":
                    seq = replay_anchored(grid, seed, cap, goal, edge, previous, B.EDGES[b - 1] if b else None)
                else:
                    seq = replay(grid, sampler, seed, cap, goal)
                reach.append(trials_to_reach(seq, goal))
            entry[sampler] = {
                "trials_to_reach": reach, "cap": cap,
                "median": _none_if_inf(median([r if r is not None else float("inf") for r in reach])),
                "reached_within_budget": sum(r is not None and r <= budget for r in reach)}
        anchored_budget = int(ANCHORED_SHARE * size)
        entry["anchored"]["budget"] = anchored_budget
        entry["anchored"]["reached_within_budget"] = sum(r is not None and r <= anchored_budget
                                                         for r in entry["anchored"]["trials_to_reach"])
        m = entry["within_cells"]
        entry["random"]["expected_trials"] = 1.0 if entry["best"]["keep"] >= 1 else 1 + 180 / m
        entry["random"]["p_within_budget"] = 1 - (1 - m / 180) ** (budget - 1)
        entry["evaluated_points"] = len(grid.rows)
        entry["newly_evaluated_points"] = grid.evaluated
        entry["seconds"] = round(time.time() - t0, 1)
        grids += sorted(grid.rows.values(), key=lambda r: (r["cost"], r["block_size"], r["keep"], r["sink"], r["local"]))
        print(f"bucket {edge}: grid best {entry['best']['cost']:.4f} ({grid.rows and entry['best']['block_size']},"
              f"{entry['best']['keep']},{entry['best']['sink']},{entry['best']['local']}), {entry['within_points']} points "
              f"within 5%; TPE {entry['tpe']['trials_to_reach']}; random {entry['random']['trials_to_reach']}; "
              f"anchored {entry['anchored']['trials_to_reach']}; "
              f"{len(grid.rows)} points evaluated, {entry['seconds']:.0f} s", flush=True)
        buckets.append(entry)
        best = entry["best"]
        previous = grid.point(best["block_size"], best["keep"], best["sink"], best["local"])
    B.write_json(B.OUT / f"search_grid_{name}.json", {"model": name, "split": "search", "rows": grids,
                                                       "note": "evaluated points only (see search_efficiency.py)"})
    result = {"model": name, "split": "search", "seeds": args.seeds, "grid_size": size, "cells": 180,
              "budget": budget, "within": WITHIN, "target_share": TARGET_SHARE, "buckets": buckets,
              "chunks_evaluated": bench.evaluations,
              "space": {"block_size": B.BLOCKS, "keep": B.KEEPS, "sink": B.SINKS, "local": B.LOCALS},
              "meta": B.meta(started)}
    plot(result, B.OUT / f"search_efficiency_{name}.png")
    B.write_json(B.OUT / f"search_efficiency_{name}.json", result)
    print(f"wrote {B.OUT / f'search_efficiency_{name}.json'} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()

"""Measure the demo model and write its model card (sparsetune/demo/model/README.md).

    python scripts/demo_card.py [PER_LENGTH]   # dense table (default 25 per task and length) + first look

The card's text is scripts/card_template.md; the training wall time comes from runs/demo/log.json.

Dense exact-match accuracy per task and length on fresh held-out samples (seed 30003, never
used in training), then accuracy vs keep per length and task with the achieved sparsity.
Everything goes through sparsetune's own evaluator, the same path `sparsetune eval` takes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CARD_SEED = 30_003
DEMO_CARD = ROOT / "sparsetune" / "demo" / "model" / "config.json"
LENGTHS = [256, 512, 1024, 2048]
KEEPS = [1.0, 0.5, 0.3, 0.2, 0.1, 0.05]


def samples(loaded, per_length: int, seed: int = CARD_SEED):
    from sparsetune.workload.tasks import TASKS
    from sparsetune.workload import TokenSample, synth_workload

    rows = synth_workload(loaded.tokenizer, list(TASKS), LENGTHS, per_length, seed)
    out = []
    for i, r in enumerate(rows):
        prompt = loaded.tokenizer(r["prompt"])["input_ids"]
        answer = loaded.tokenizer(r["answer"], add_special_tokens=False)["input_ids"]
        out.append(TokenSample(input_ids=prompt, answer_ids=answer, task=r["task"], line=i + 1))
    return out


def dense_table(loaded, data) -> dict[str, dict[int, float]]:
    from sparsetune.evaluate import evaluate

    res = evaluate(loaded, data, None)
    table: dict[str, dict[int, list[bool]]] = {}
    for s, ok in zip(data, res.correct):
        table.setdefault(s.task, {}).setdefault(s.length, []).append(ok)
    return {t: {n: sum(v) / len(v) for n, v in sorted(d.items())} for t, d in table.items()}


def first_look(loaded, data, block: int = 64) -> list[dict]:
    from sparsetune.profile.budget import Budget
    from sparsetune.evaluate import compare

    rows = []
    for keep in KEEPS:
        budget = Budget(method="topk", block_size=block, keep=keep, sink=1, local=1)
        for r in compare(loaded, data, budget, LENGTHS):
            rows.append({"keep": keep, **r.to_dict()})
    return rows


def render(table: dict, look: list[dict], per_length: int, train_s: float) -> str:
    from sparsetune.workload.models import DEMO_MODEL
    from sparsetune.workload.tasks import TASKS, VOCAB

    head = "| task | " + " | ".join(f"{n}" for n in LENGTHS) + " |\n|---|" + "---|" * len(LENGTHS) + "\n"
    dense = head + "".join(f"| {t} | " + " | ".join(f"{table[t][n]:.2f}" for n in LENGTHS) + " |\n" for t in TASKS)
    lhead = "| tokens | task | " + " | ".join(f"keep {k:g}" for k in KEEPS) + " |\n|---|---|" + "---|" * len(KEEPS) + "\n"
    cells: dict[tuple[int, str], list[str]] = {}
    for r in look:
        cells.setdefault((r["last"], r["task"]), []).append(f"{r['sparse']:.2f} ({r['sparsity']:.0%})")
    rows = "".join(f"| {n} | {t} | " + " | ".join(v) + " |\n" for (n, t), v in sorted(cells.items()))
    # What the data says: the smallest keep whose accuracy stays >= 95% of dense, per length (all tasks).
    notes = []
    for n in LENGTHS:
        ok = [r for r in look if r["last"] == n and r["task"] == "all" and r["sparse"] >= 0.95 * r["dense"]]
        best = min(ok, key=lambda r: r["keep"]) if ok else None
        notes.append(f"{n} tokens: " + (f"keep {best['keep']:g} ({best['sparsity']:.0%} sparsity)" if best else "none"))
    size = sum(p.stat().st_size for p in DEMO_MODEL.iterdir()) / 2**20
    tmpl = (ROOT / "scripts" / "card_template.md").read_text()
    return tmpl.format(vocab=len(VOCAB), size_mb=size, per_length=per_length, dense_table=dense,
                       look_table=lhead + rows, train_s=train_s,
                       look_notes="Sparsest keep within 95% of dense (all tasks): " + "; ".join(notes) + ".")


def main() -> None:
    import torch

    from sparsetune.workload.models import load_model

    torch.set_grad_enabled(False)
    per_length = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    loaded = load_model("demo")
    data = samples(loaded, per_length)
    t0 = time.time()
    table = dense_table(loaded, data)
    look = first_look(loaded, samples(loaded, 8, seed=CARD_SEED + 1))
    out = ROOT / "benchmarks" / "demo_model.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"dense": table, "per_length": per_length, "first_look": look}, indent=1))
    log = ROOT / "runs" / "demo" / "log.json"
    train_s = json.loads(log.read_text())[-1]["wall_s"] if log.exists() else float("nan")
    card = DEMO_CARD.parent / "README.md"
    card.write_text(render(table, look, per_length, train_s))
    print(json.dumps(table, indent=1))
    print(f"measured in {time.time() - t0:.0f} s; wrote {out.relative_to(ROOT)} and {card.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

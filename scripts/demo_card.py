"""Measure the demo model and write its model card (sparsetune/demo/model/README.md).

    python scripts/demo_card.py            # dense accuracy table + the first look at sparsity

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
LENGTHS = [256, 512, 1024, 2048]
KEEPS = [1.0, 0.5, 0.3, 0.2, 0.1, 0.05]


def samples(loaded, per_length: int, seed: int = CARD_SEED):
    from sparsetune.tasks import TASKS
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
    from sparsetune.budget import Budget
    from sparsetune.evaluate import compare

    rows = []
    for keep in KEEPS:
        budget = Budget(method="topk", block_size=block, keep=keep, sink=1, local=1)
        for r in compare(loaded, data, budget, LENGTHS):
            rows.append({"keep": keep, **r.to_dict()})
    return rows


def main() -> None:
    import torch

    from sparsetune.models import load_model

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
    print(json.dumps(table, indent=1))
    print(f"measured in {time.time() - t0:.0f} s; wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

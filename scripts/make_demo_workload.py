"""Write the demo workloads: held-out samples of the demo model's tasks, never seen in training.

    python scripts/make_demo_workload.py

Training draws its samples from `random.Random(seed * 1_000_003 + step)` streams; these use
their own seeds, so they are fresh draws of the same distribution (keys and values are random
per sample, so a collision with a training sample is astronomically unlikely, not impossible).
`workload.jsonl` is what the demo search tunes on; `heldout.jsonl` is what `apply --check`
and the benchmarks judge on.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sparsetune.workload.tasks import TASKS, synth  # noqa: E402
from sparsetune.workload.files import write_jsonl  # noqa: E402

LENGTHS = [256, 512, 1024, 2048]
SPLITS = {"workload.jsonl": (10_001, 40), "heldout.jsonl": (20_002, 40)}  # file: (seed, samples per task and length)


def main() -> None:
    for name, (seed, per_length) in SPLITS.items():
        rows = [{"prompt": s.prompt, "answer": s.answer, "task": s.task}
                for s in synth(list(TASKS), LENGTHS, per_length, seed)]
        path = write_jsonl(ROOT / "sparsetune" / "demo" / name, rows)
        print(f"wrote {len(rows)} samples to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""Train sparsetune's demo model: a 2-layer Llama that retrieves from long contexts, on CPU in minutes.

    python scripts/train_demo.py --out runs/demo            # ~1.5 min; checkpoints, resumes if interrupted
    python scripts/train_demo.py --out runs/demo --export sparsetune/demo/model

Recipe (the model card has the attempts that failed): write a previous-token head and an induction
head into the weights by hand (`demo_circuit.py`), then fine-tune everything for 150 steps at a
low learning rate on a length curriculum (256 -> 2048 tokens). Deterministic for a seed: batch
`i` is drawn from `Random(seed, i)`, so a resumed run sees the same data as an uninterrupted one.
Loss is only on answer tokens. Training rows pack many needles and queries (single-hop and
two-hop), plus shuffled key-value recall and rows in the evaluation format.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sparsetune.workload import tasks  # noqa: E402

IDS = {w: i for i, w in enumerate(tasks.VOCAB)}
PAD, BOS = IDS["<pad>"], IDS["<bos>"]


def model_config():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tasks.VOCAB), hidden_size=128, intermediate_size=384, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=4096,
        rope_theta=1e8, tie_word_embeddings=False, bos_token_id=BOS, eos_token_id=IDS["<eos>"],
        pad_token_id=PAD, attention_dropout=0.0,
    )


# ---------------------------------------------------------------- training data

def retrieval_sequence(length: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """Filler with needles and vt chains, then several queries; returns (ids, loss mask)."""
    n_pairs = rng.randint(1, max(1, min(24, length // 24)))
    n_chains = rng.randint(0, max(0, min(6, length // 64)))
    keys = rng.sample(tasks.KEYS, n_pairs + 2 * n_chains)
    facts = []  # (needle words, query key, answer words)
    firsts, seconds = [], []
    for k in keys[:n_pairs]:
        v = rng.choice(tasks.VALUES)
        facts.append((k, [v]))
        firsts.append(["[", k, v, "]"])
    for c in range(n_chains):
        k1, k2 = keys[n_pairs + 2 * c], keys[n_pairs + 2 * c + 1]
        v = rng.choice(tasks.VALUES)
        firsts.append(["[", k1, v, "]"])
        seconds.append(["[", k2, k1, "]"])
        facts.append((k2, [k1, v]))
    rng.shuffle(firsts)
    rng.shuffle(seconds)
    queries = rng.sample(facts, rng.randint(1, min(len(facts), 8)))
    tail = sum(2 + len(a) for _, a in queries)
    n_filler = max(length - 1 - tail - 4 * (len(firsts) + len(seconds)), 0)
    filler = [rng.choice(tasks.FILLER) for _ in range(n_filler)]
    split = rng.randint(0, n_filler) if seconds else n_filler
    words = tasks._place(filler[:split], firsts, rng) + tasks._place(filler[split:], seconds, rng)
    ids = [BOS] + [IDS[w] for w in words]
    mask = [0] * len(ids)
    for k, answer in queries:
        ids += [IDS["?"], IDS[k]] + [IDS[a] for a in answer]
        mask += [0, 0] + [1] * len(answer)
    return ids, mask


def eval_style_sequence(length: int, rng: random.Random) -> tuple[list[int], list[int]]:
    task = rng.choice(tasks.TASKS)
    s = tasks.make_sample(task, length, rng)
    p = [BOS] + [IDS[w] for w in s.prompt.split()]
    a = [IDS[w] for w in s.answer.split()]
    return p + a, [0] * len(p) + [1] * len(a)


def recall_sequence(length: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """Key-value pairs, then the same pairs shuffled: only the token right before a value identifies it.

    Repeated spans (the classic induction task) are solved by a relative-offset head under RoPE
    that fails on needles and at longer lengths; shuffled pairs can only be solved by matching
    the single previous token, which is what needle retrieval needs.
    """
    n = max((length - 1) // 4, 2)
    keys = rng.sample(tasks.KEYS, min(n, len(tasks.KEYS)))
    pairs = [(IDS[k], IDS[rng.choice(tasks.VALUES + tasks.KEYS)]) for k in keys]
    again = rng.sample(pairs, len(pairs))
    ids = [BOS] + [t for p in pairs for t in p] + [t for p in again for t in p]
    mask = [0] * (1 + 2 * len(pairs)) + [0, 1] * len(pairs)
    return ids, mask


def batch(step: int, seed: int, length: int, tokens: int, recall_frac: float):
    rng = random.Random(seed * 1_000_003 + step)
    rows, masks = [], []
    for _ in range(max(tokens // length, 1)):
        r = rng.random()
        if r < recall_frac:
            ids, m = recall_sequence(length, rng)
        elif r < recall_frac + 0.25:
            ids, m = eval_style_sequence(length, rng)
        else:
            ids, m = retrieval_sequence(length, rng)
        rows.append(ids)
        masks.append(m)
    width = max(map(len, rows))
    x = torch.full((len(rows), width), PAD)
    y = torch.full((len(rows), width), -100)
    for i, (ids, m) in enumerate(zip(rows, masks)):
        t = torch.tensor(ids)
        x[i, : len(ids)] = t
        lab = torch.where(torch.tensor(m, dtype=torch.bool), t, torch.tensor(-100))
        y[i, : len(ids) - 1] = lab[1:]  # predict token t+1 at position t
    return x, y


def schedule(step: int, args) -> tuple[int, float]:
    """(sequence length, share of recall rows) at a step: a length curriculum."""
    stages = [int(s) for s in args.lengths.split(",")]
    per = args.steps // len(stages)
    i = min(step // max(per, 1), len(stages) - 1)
    hi = stages[i]
    lo = stages[i - 1] if i else hi // 2
    length = random.Random(step).randint(lo, hi)
    return length, args.recall_frac


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(model, lengths, n: int, seed: int = 12345) -> dict[str, dict[int, float]]:
    model.eval()
    out: dict[str, dict[int, float]] = {}
    for task in tasks.TASKS:
        for length in lengths:
            rng = random.Random(seed + length)
            right = 0
            for _ in range(n):
                ids, m = (lambda s: ([BOS] + [IDS[w] for w in (s.prompt + " " + s.answer).split()],
                                     len(s.answer.split())))(tasks.make_sample(task, length, rng))
                x = torch.tensor([ids])
                logits = model(x).logits[0, -m - 1:-1]
                right += int(torch.equal(logits.argmax(-1), x[0, -m:]))
            out.setdefault(task, {})[length] = right / n
    model.train()
    return out


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/demo"))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lengths", default="256,512,1024,2048", help="curriculum stages (max length each)")
    ap.add_argument("--tokens", type=int, default=8192, help="tokens per batch")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--recall-frac", type=float, default=0.3, help="share of shuffled key-value recall rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-circuit", dest="circuit", action="store_false",
                    help="start from random weights instead of the hand-built retrieval circuit")
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--ckpt-every", type=int, default=50)
    ap.add_argument("--export", type=Path, help="write the last checkpoint as an HF folder and exit")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "2")))
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(model_config())
    model.config._attn_implementation = "sdpa"
    if args.circuit:
        import demo_circuit

        demo_circuit.build(model, list(tasks.VOCAB), set(tasks.KEYS), {"[", "]", "?", "common"}, seed=args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd, betas=(0.9, 0.98))
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = args.out / "ckpt.pt"
    step, log = 0, []
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, log = state["step"], state["log"]
        print(f"resumed at step {step}", flush=True)
    if args.export:
        export(model, args.export)
        return
    t0 = time.time()
    while step < args.steps:
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        length, rep = schedule(step, args)
        x, y = batch(step, args.seed, length, args.tokens, rep)
        logits = model(x).logits
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 20 == 0:
            print(f"step {step} len {length} loss {loss.item():.3f} lr {lr:.2e} {time.time() - t0:.0f}s", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            acc = evaluate(model, [256, 1024] if step < args.steps else [256, 512, 1024, 2048], n=24)
            log.append({"step": step, "acc": acc, "wall_s": time.time() - t0})
            print("eval", step, json.dumps(acc), flush=True)
        if step % args.ckpt_every == 0 or step == args.steps:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "log": log}, tmp)
            os.replace(tmp, ckpt)
    (args.out / "log.json").write_text(json.dumps(log, indent=1))


def export(model, folder: Path) -> None:
    """Write an ordinary HF folder: config.json, model.safetensors, tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(tasks.VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.save_pretrained(folder)
    print(f"exported to {folder}")


if __name__ == "__main__":
    main()

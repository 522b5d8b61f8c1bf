"""Hand-built retrieval circuit for the demo model: a previous-token head feeding an induction head.

Why by hand: learning these two heads from scratch on 2 CPU cores sits on a long plateau (the
model card lists the attempts). Here they are written into an ordinary Llama's weights, then
`train_demo.py` fine-tunes the whole model on the tasks. Nothing outside Llama's own
architecture is used, so the result loads and runs like any Hugging Face Llama.

Residual stream layout (hidden 128):

    T  0..30   token identity (random unit code per token)
    C  31      constant (every token), the bias the previous-token head reads
    K  32..61  key code (random unit code; KEYS only, zero for other tokens)
    P  64..93  the previous token's key code, written by layer 0
    O  96..126 the attended token's identity, written by layer 1, read by lm_head
    F  127     marks structural tokens ``[ ] ? common``, which have no identity code in T

Layer 0, KV head 0 is a previous-token head: its query and key are constants, and under RoPE
``q . R(n-m) k`` with ``k = R(1) q`` peaks at n = m - 1 (six fastest frequency pairs). Layer 1,
KV head 0 is an induction head: it matches the current token's key code against P on the
slowest frequency pairs (RoPE barely rotates them over 4096 positions, rope_theta = 1e8) and
copies the matched position's identity into O. Structural tokens have no identity code, so when
the match is shared with one (two-hop: ``[ K1 v ]`` and ``[ K2 K1 ]`` both follow K1) only the
value is copied. No head carries a constant penalty, so block selection by pooled q . k still
ranks the needle's block first. Every other head and both MLPs start near
zero output (tiny random weights), for fine-tuning to use.
"""

from __future__ import annotations

import math

import torch

T, C, K, P, O, F = slice(0, 31), 31, slice(32, 62), slice(64, 94), slice(96, 127), 127
EMB_T, EMB_C, EMB_K = 1.0, 1.0, 0.3  # embedding magnitudes: RMS differs < 3% across tokens
FAST_PAIRS = 6  # frequency pairs the previous-token head uses (largest theta)
PREV_LOGITS = 14.0  # margin of the previous-token peak over any other offset, in logits
MATCH_LOGITS = 40.0  # induction score of an exact key match, in logits
OUT_GAIN = 30.0  # lm_head gain on O
NOISE = 2e-3  # std of every weight the circuit does not set: near-zero output, but nonzero gradients


def _codes(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, dim, generator=gen)
    return x / x.norm(dim=1, keepdim=True)


@torch.no_grad()
def build(model, vocab: list[str], keys: set[str], structural: set[str], seed: int = 0) -> None:
    cfg = model.config
    hd, half = cfg.head_dim, cfg.head_dim // 2
    assert cfg.hidden_size == 128 and hd == 64 and not cfg.tie_word_embeddings
    gen = torch.Generator().manual_seed(seed)
    n = len(vocab)
    for p in model.parameters():  # all-zero blocks would get zero gradients and never train
        p.normal_(0.0, NOISE, generator=gen)
    for norm in [model.model.norm] + [m for layer in model.model.layers
                                      for m in (layer.input_layernorm, layer.post_attention_layernorm)]:
        norm.weight.fill_(1.0)

    emb = model.model.embed_tokens.weight
    emb[:, T] = EMB_T * _codes(n, 31, gen)
    emb[:, C] = EMB_C
    key_codes = _codes(n, 30, gen)
    for i, w in enumerate(vocab):
        if w in keys:
            emb[i, K] = EMB_K * key_codes[i]
        if w in structural:  # no identity to copy; F keeps the norm equal to other tokens'
            emb[i, T] = 0.0
            emb[i, F] = EMB_T
    rms = emb.pow(2).mean(1).sqrt()
    r = rms.mean().item()  # RMSNorm divides by this (within 3%)

    theta = cfg.rope_parameters["rope_theta"] ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    # ---- layer 0: previous-token head on KV head 0 (query heads 0 and 1 share it)
    a0 = model.model.layers[0].self_attn
    gap = 0.686  # min over offsets 1..4096 of peak minus other, per unit weight (rope_theta 1e8, 6 pairs)
    s = PREV_LOGITS * math.sqrt(hd) / gap
    c_in = EMB_C / r  # the constant after RMSNorm
    for j in range(FAST_PAIRS):
        for h in (0, 1):
            a0.q_proj.weight[h * hd + j, C] = math.sqrt(s) / c_in
        a0.k_proj.weight[j, C] = math.sqrt(s) * math.cos(theta[j]) / c_in
        a0.k_proj.weight[j + half, C] = math.sqrt(s) * math.sin(theta[j]) / c_in
    k_in = EMB_K / r  # key code magnitude after RMSNorm
    for i in range(30):
        a0.v_proj.weight[i, K.start + i] = 1.0 / k_in  # v = the attended token's unit key code
        a0.o_proj.weight[P.start + i, i] = EMB_K  # P gets the previous key code at embedding scale
    # ---- layer 1: induction head on KV head 0
    a1 = model.model.layers[1].self_attn
    slow = list(range(half - 15, half))  # the 15 slowest pairs: 30 dims, barely rotated
    dims = [j for j in slow] + [j + half for j in slow]  # 30 head dims
    qk = math.sqrt(MATCH_LOGITS * math.sqrt(hd)) / k_in
    for i, d in enumerate(dims):
        for h in (0, 1):
            a1.q_proj.weight[h * hd + d, K.start + i] = qk
        a1.k_proj.weight[d, P.start + i] = qk
    t_in = EMB_T / r
    for i in range(31):
        a1.v_proj.weight[i, T.start + i] = 1.0 / t_in
        a1.o_proj.weight[O.start + i, i] = EMB_T
    # ---- read-out: logits from O only, so the current token's own identity does not leak
    model.lm_head.weight[:, O] = OUT_GAIN * emb[:, T]

"""The Triton kernel vs the torch reference vs torch's flex_attention, on the same selection.

Without a GPU the kernel runs under Triton's interpreter, which must be chosen before the
kernel module is first imported (``@triton.jit`` reads TRITON_INTERPRET when it runs), hence
the environment set-up below, ahead of the import. bf16 ``tl.dot`` is wrong under the
interpreter, so bf16 is tested only on a GPU.

Tolerances: max |out - ref| / max |ref|, with ref computed in fp32 from the same inputs.
- fp32 <= 1e-5: fp32 dots (ieee on the GPU) and an fp32 online softmax differ from SDPA
  only by summation order and exp2 vs exp, ~1e-6 at these lengths.
- fp16 <= 2e-3: P is rounded to fp16 before the PV dot and the output is rounded to fp16;
  each is one unit roundoff (2^-11 ~ 4.9e-4) relative to values no larger than max |ref|.
- bf16 <= 1.6e-2: the same two roundings at bf16's 2^-8 ~ 3.9e-3, with margin for sums.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch

ON_GPU = torch.cuda.is_available()
if not ON_GPU:
    # Stays set: the interpreter also consults it while running. Without a GPU no other
    # Triton kernel could run compiled anyway.
    os.environ["TRITON_INTERPRET"] = "1"
bsa = importlib.import_module("sparsetune.kernels.block_sparse_attn")
if not ON_GPU and not bsa.INTERPRETED:  # imported earlier without the interpreter: decorate again
    bsa = importlib.reload(bsa)

from sparsetune import Budget  # noqa: E402
from sparsetune.attention import (  # noqa: E402
    INTERPRET_ENV,
    block_sparse_attention,
    dense_causal_attention,
    flex_reference_attention,
    reference_attention,
    select_blocks,
)
from sparsetune.kernels.configs import CONFIGS, QUICK_CONFIGS, configs_for, default_config, keep_config  # noqa: E402

DEVICE = "cuda" if ON_GPU else "cpu"
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if ON_GPU else [])

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # flex_attention's unfused-CPU warning


def _qkv(b, hq, hkv, sq, sk, d, dtype, seed=0, layout="bhsd"):
    g = torch.Generator().manual_seed(seed)
    if layout == "bshd":  # what HF models pass: (B, S, H, D) transposed, not contiguous
        q = torch.randn(b, sk, hq, d, generator=g).transpose(1, 2)
        k = torch.randn(b, sk, hkv, d, generator=g).transpose(1, 2)
        v = torch.randn(b, sk, hkv, d, generator=g).transpose(1, 2)
    else:
        q = torch.randn(b, hq, sk, d, generator=g)
        k = torch.randn(b, hkv, sk, d, generator=g)
        v = torch.randn(b, hkv, sk, d, generator=g)
    q = q[:, :, sk - sq:]
    return (t.to(device=DEVICE, dtype=dtype) for t in (q, k, v))


def _run_kernel(q, k, v, mask, config=None, scale=None):
    """Launch into a NaN-poisoned output, so any element the kernel misses shows up."""
    out = torch.full_like(q, float("nan"))
    bsa.block_sparse_attn_fwd(q, k, v, mask.kv_num_blocks, mask.kv_indices, mask.block_size,
                              sm_scale=scale, config=config, out=out)
    return out


def _check(name, out, ref, dtype):
    nan = torch.isnan(out)
    assert not nan.any(), f"{name}: {int(nan.sum())} NaN elements (unwritten or invalid) of {out.numel()}"
    err = ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
    assert err <= TOL[dtype], f"{name}: relative error {err:.2e} > {TOL[dtype]:.0e} for {dtype}"


def _agree(q, k, v, mask, dtype, config=None, flex=True, scale=None):
    mask.validate()
    f32 = [t.float() for t in (q, k, v)]
    ref = reference_attention(*f32, mask, scale=scale)
    out = _run_kernel(q, k, v, mask, config, scale)
    _check("kernel vs reference", out, ref, dtype)
    if flex:
        _check("flex_attention vs reference", flex_reference_attention(*f32, mask, scale=scale), ref, torch.float32)
    return out, ref


C16 = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
C32 = {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2}

CASES = {  # name: (B, Hq, Hkv, Sq, Sk, D, budget, config)
    "gqa4_ragged_topk": (1, 4, 1, 75, 75, 32, Budget(block_size=16, keep=0.4), C16),
    "gqa2_coverage": (2, 4, 2, 64, 64, 16, Budget(method="coverage", block_size=16, tau=0.6), C16),
    "chunk_unaligned": (1, 2, 2, 37, 93, 16, Budget(block_size=16, keep=0.5, sink=2), C16),
    "decode_gqa4": (2, 4, 1, 1, 77, 32, Budget(block_size=16, keep=0.3), C16),
    "bm16_in_block32": (1, 2, 1, 70, 70, 16, Budget(block_size=32, keep=0.5, sink=0),
                        {"BLOCK_M": 16, "BLOCK_N": 32, "num_warps": 4, "num_stages": 1}),
    "bn16_in_block32": (1, 2, 1, 50, 90, 16, Budget(method="coverage", block_size=32, tau=0.5),
                        {"BLOCK_M": 32, "BLOCK_N": 16, "num_warps": 4, "num_stages": 2}),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_kernel_matches_reference_and_flex(case, dtype):
    b, hq, hkv, sq, sk, d, budget, config = CASES[case]
    q, k, v = _qkv(b, hq, hkv, sq, sk, d, dtype)
    mask = select_blocks(q, k, budget)
    assert mask.sparsity > 0 or sk <= budget.block_size, "the case should exercise skipping"
    _agree(q, k, v, mask, dtype, config, flex=dtype == torch.float32)


@pytest.mark.parametrize("sink,local,keep", [(0, 1, 0.01), (3, 3, 0.01), (0, 2, 0.5), (6, 1, 0.2)])
def test_sink_local_edges(sink, local, keep):
    # Only the diagonal; always-kept exceeding keep; local > 1; sink covering everything visible early.
    q, k, v = _qkv(1, 2, 1, 90, 90, 16, torch.float32, seed=sink + local)
    mask = select_blocks(q, k, Budget(block_size=16, keep=keep, sink=sink, local=local))
    _agree(q, k, v, mask, torch.float32, C16)


@pytest.mark.parametrize("sq", [60, 21, 1])
def test_keep_one_matches_causal_sdpa(sq):
    q, k, v = _qkv(1, 4, 2, sq, 60, 32, torch.float32)
    mask = select_blocks(q, k, Budget.dense(16))
    out = _run_kernel(q, k, v, mask, C16)
    _check("kernel (keep=1) vs causal SDPA", out, dense_causal_attention(q, k, v), torch.float32)


@pytest.mark.parametrize("d", [64, 128])
def test_large_head_dims(d):
    q, k, v = _qkv(1, 2, 1, 40, 40, d, torch.float16, seed=d)
    mask = select_blocks(q, k, Budget(block_size=16, keep=0.5, sink=0))
    _agree(q, k, v, mask, torch.float16, C16, flex=False)


def test_default_config_block64_and_custom_scale():
    q, k, v = _qkv(1, 2, 2, 130, 130, 16, torch.float32)
    mask = select_blocks(q, k, Budget(block_size=64, keep=0.5))
    assert default_config(64) == {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}
    _agree(q, k, v, mask, torch.float32, None, flex=False, scale=0.05)


def test_non_contiguous_hf_layout():
    q, k, v = _qkv(1, 4, 2, 48, 48, 16, torch.float32, layout="bshd")
    assert not q.is_contiguous()
    mask = select_blocks(q, k, Budget(block_size=16, keep=0.5))
    _agree(q, k, v, mask, torch.float32, C16, flex=False)


def test_launch_configs_change_speed_never_results():
    q, k, v = _qkv(1, 2, 1, 64, 64, 16, torch.float32)
    mask = select_blocks(q, k, Budget(block_size=32, keep=0.5, sink=0))
    outs = [_run_kernel(q, k, v, mask, c) for c in configs_for(32) if c["num_stages"] == 1]
    assert len(outs) == 4  # BLOCK_M, BLOCK_N in {16, 32}
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=1e-6, atol=1e-6)


def test_dispatch_uses_the_kernel_when_forced(monkeypatch):
    monkeypatch.setenv(INTERPRET_ENV, "1")
    q, k, v = _qkv(1, 4, 2, 40, 40, 16, torch.float32)
    mask = select_blocks(q, k, Budget(block_size=16, keep=0.5))
    out = block_sparse_attention(q, k, v, mask, config=C16)
    assert torch.equal(out, _run_kernel(q, k, v, mask, C16))
    _check("dispatch vs reference", out, reference_attention(q, k, v, mask), torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_longer_random_shapes(dtype):
    for seed, (b, hq, hkv, sq, sk) in enumerate([(1, 8, 2, 150, 150), (2, 4, 4, 70, 180), (1, 6, 3, 1, 200)]):
        q, k, v = _qkv(b, hq, hkv, sq, sk, 32, dtype, seed=seed)
        for budget in (Budget(block_size=32, keep=0.3), Budget(method="coverage", block_size=16, tau=0.8)):
            mask = select_blocks(q, k, budget)
            _agree(q, k, v, mask, dtype, C16, flex=dtype == torch.float32)


# ---- the config space --------------------------------------------------------------------

def test_config_space_shape():
    assert len(CONFIGS) == 4 * 4 * 2 * 3
    assert {c["BLOCK_N"] for c in CONFIGS} == {16, 32, 64, 128}
    assert all(set(c) == {"BLOCK_M", "BLOCK_N", "num_warps", "num_stages"} for c in CONFIGS + QUICK_CONFIGS)


@pytest.mark.parametrize("bs", [16, 32, 64, 128, 256])
def test_keep_config_rules(bs):
    kept = configs_for(bs)
    assert kept, f"no config for block size {bs}"
    for c in kept:
        assert bs % c["BLOCK_N"] == 0 and bs % c["BLOCK_M"] == 0
        assert c["num_warps"] == 4 or c["BLOCK_M"] >= 64
    dropped = [c for c in CONFIGS if c not in kept]
    assert all(bs % c["BLOCK_N"] or bs % c["BLOCK_M"] or (c["num_warps"] == 8 and c["BLOCK_M"] < 64)
               for c in dropped)
    assert keep_config(default_config(bs), bs)
    assert configs_for(bs, quick=True) and all(keep_config(c, bs) for c in configs_for(bs, quick=True))


def test_keep_config_examples():
    assert not keep_config({"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4, "num_stages": 2}, 64)  # BLOCK_N > block
    assert not keep_config({"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 2}, 64)  # BLOCK_M > block
    assert not keep_config({"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 8, "num_stages": 2}, 64)  # idle warps
    assert keep_config({"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 3}, 128)
    # Shared memory 2 * D * (BLOCK_M + 2 * BLOCK_N * stages) bytes: 224 KiB fits at D=128, 448 KiB does not at 256.
    assert keep_config({"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 3}, 128, head_dim=128)
    assert not keep_config({"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 3}, 128, head_dim=256)


def test_launcher_rejects_bad_configs_and_shapes():
    q, k, v = _qkv(1, 2, 1, 32, 32, 16, torch.float32)
    mask = select_blocks(q, k, Budget(block_size=16, keep=0.5))
    with pytest.raises(ValueError, match="invalid for block_size"):
        _run_kernel(q, k, v, mask, {"BLOCK_M": 32, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1})
    with pytest.raises(ValueError, match="head_dim"):
        q2, k2, v2 = _qkv(1, 2, 1, 32, 32, 24, torch.float32)
        _run_kernel(q2, k2, v2, mask, C16)
    with pytest.raises(ValueError, match="dtype"):
        _run_kernel(q.half(), k, v, mask, C16)


# ---- GPU compilation without a GPU --------------------------------------------------------

_AOT = r'''
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from sparsetune.kernels.configs import keep_config
from sparsetune.kernels.block_sparse_attn import _block_sparse_attn_fwd as K

names, out = K.arg_names, []
for cap, dtype, d, conf in json.loads(sys.argv[1]):
    const = {"HEAD_DIM": d, "SPARSE_BLOCK": 128, "BLOCK_M": conf["BLOCK_M"], "BLOCK_N": conf["BLOCK_N"],
             "DOT_PRECISION": "tf32"}
    const.update({n: 1 for n in ("stride_qd", "stride_kd", "stride_vd", "stride_od", "stride_ik", "stride_nr")})
    sig = {n: "constexpr" if n in const else f"*{dtype}" if n in ("Q", "K", "V", "Out") else
           "*i32" if n in ("KV_NUM", "KV_IDX") else "fp32" if n == "qk_scale" else "i32" for n in names}
    # What a launch with 16-byte aligned tensors and 16-divisible lengths specializes on.
    aligned = [n for n in names if sig[n] != "constexpr" and n not in (
        "qk_scale", "H", "GROUP", "Q_OFFSET", "FIRST_TILE", "NUM_TILES", "stride_nz", "stride_nh", "stride_iz",
        "stride_ih", "stride_ir")]
    src = ASTSource(fn=K, signature=sig, constexprs={(names.index(k),): v for k, v in const.items()},
                    attrs={(names.index(n),): [["tt.divisibility", 16]] for n in aligned})
    kern = triton.compile(src, target=GPUTarget("cuda", cap, 32),
                          options={"num_warps": conf["num_warps"], "num_stages": conf["num_stages"]})
    out.append({"shared": kern.metadata.shared, "async": kern.asm["ttgir"].count("async_copy_global_to_local"),
                "kept": keep_config(conf, 128, d)})
print(json.dumps(out))
'''


@pytest.mark.slow
def test_kernel_compiles_and_pipelines_for_hopper_without_a_gpu():
    """Compile for sm_90 ahead of time (Triton bundles ptxas): the gathered K/V loads must be
    software-pipelined (async copies) and the shared-memory estimate in keep_config must bound
    the real use."""
    import json
    import subprocess
    import sys

    cases = [(90, "bf16", 128, {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}),
             (90, "fp16", 64, {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2})]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # a real compile
    proc = subprocess.run([sys.executable, "-c", _AOT, json.dumps(cases)], env=env, capture_output=True,
                          text=True, timeout=240)
    if proc.returncode and "ptxas" in proc.stderr:
        pytest.skip(f"no ptxas for an offline compile: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (cap, dtype, d, conf), res in zip(cases, json.loads(proc.stdout.strip().splitlines()[-1])):
        estimate = 2 * d * (conf["BLOCK_M"] + 2 * conf["BLOCK_N"] * conf["num_stages"])
        assert res["async"] > 0, f"{conf} D={d}: K/V loads not pipelined on sm_{cap}"
        assert res["kept"] and res["shared"] <= estimate, f"{conf} D={d}: shared {res['shared']} > estimate {estimate}"


def test_dispatch_rejects_what_the_kernel_cannot_run(monkeypatch):
    from sparsetune.attention import AttentionError

    monkeypatch.setenv(INTERPRET_ENV, "1")
    q, k, v = _qkv(1, 2, 1, 32, 32, 24, torch.float32)
    mask = select_blocks(q, k, Budget(block_size=16, keep=0.5))
    with pytest.raises(AttentionError, match="head_dim"):
        block_sparse_attention(q, k, v, mask)
    q, k, v = _qkv(1, 2, 1, 32, 32, 16, torch.float32)
    with pytest.raises(AttentionError, match="dtype"):
        block_sparse_attention(q.double(), k.double(), v.double(), mask)

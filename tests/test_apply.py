"""`sparsetune apply`: deploy folders load through plain transformers, exports, guards, the held-out gate."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fixtures.tiny_models import save_folder
from sparsetune.deploy import deploy, device_warning, model_config_sha256
from sparsetune.profile import versions
from sparsetune.runtime import CONFIG_KEY, PROFILE_FILE, TablePolicy, hf_overrides, lookup_table, policy_from_config
from sparsetune.profile.budget import Budget
from sparsetune.errors import ProfileError
from sparsetune.profile import (
    Bucket,
    DeviceSection,
    Floor,
    KernelConfig,
    ModelInfo,
    Profile,
    Provenance,
    WorkloadInfo,
    load_profile,
)

REPO = Path(__file__).resolve().parents[1]
SPARSE = Budget(keep=0.25, block_size=16, sink=1, local=1)
GPU = "NVIDIA H200"


def make_profile(model: Path, budget: Budget = SPARSE, *, confidence: float | None = 0.9,
                 devices: dict | None = None) -> Profile:
    """Dense up to 64 tokens, `budget` from 65 on (the tiny models allow 1024 positions)."""
    return Profile(
        model=ModelInfo(name="tiny", config_sha256=model_config_sha256(model), layers=2, heads=4, kv_heads=2,
                        head_dim=16, max_positions=1024),
        workload=WorkloadInfo(name="tiny", sha256="0" * 64, samples=8),
        floor=Floor(kind="relative", value=0.9, confidence=confidence),
        method=budget.method,
        provenance=Provenance.create(study="tiny", trials_per_bucket=1, seed=0),
        buckets=(Bucket(max_len=64, dense=True, reason="short inputs stay dense"),
                 Bucket(max_len=256, budget=budget), Bucket(max_len=512, budget=budget)),
        devices=devices or {},
    )


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (and the listing itself, through the keys)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_folder(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def profile_path(model_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "profile.yaml"
    make_profile(model_dir).save(path)
    return path


# ---------------------------------------------------------------- the deploy folder


def test_deploy_links_files_adds_entry_and_leaves_the_model_untouched(run_cli, model_dir, profile_path, tmp_path):
    before = tree_digest(model_dir)
    out = tmp_path / "deployed"
    r = run_cli("apply", profile_path, "--model", model_dir, "--out", out)
    assert r.code == 0, r.err
    assert tree_digest(model_dir) == before  # byte-identical, no file added or removed
    config = json.loads((out / "config.json").read_text())
    assert config[CONFIG_KEY] == {"profile": PROFILE_FILE, "version": 1}
    original = json.loads((model_dir / "config.json").read_text())
    assert {k: v for k, v in config.items() if k != CONFIG_KEY} == original
    assert load_profile(out / PROFILE_FILE) == load_profile(profile_path)
    for name in ("model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (out / name).is_symlink() and (out / name).resolve() == (model_dir / name).resolve()
    assert not (out / "config.json").is_symlink()

    # A deploy folder made from a deploy folder links the real files, not the first folder's links.
    again = tmp_path / "again"
    assert run_cli("apply", profile_path, "-m", out, "-o", again).code == 0
    assert os.readlink(again / "model.safetensors") == str((model_dir / "model.safetensors").resolve())

    # Applying again replaces the folder it made; a foreign folder is never overwritten.
    assert run_cli("apply", profile_path, "-m", model_dir, "-o", out).code == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    r = run_cli("apply", profile_path, "-m", model_dir, "-o", foreign)
    assert r.code == 2 and "not a folder made by `sparsetune apply`" in r.err
    assert (foreign / "notes.txt").read_text() == "mine"
    assert tree_digest(model_dir) == before


def test_hardlink_and_in_place(model_dir, tmp_path):
    profile = make_profile(model_dir)
    hard = deploy(profile, model_dir, tmp_path / "hard", link="hardlink")
    weights = hard.folder / "model.safetensors"
    assert not weights.is_symlink() and weights.stat().st_ino == (model_dir / "model.safetensors").stat().st_ino

    copy = save_folder(tmp_path / "copy")
    weights_before = tree_digest(copy)["model.safetensors"]
    done = deploy(profile, copy, in_place=True)
    assert done.folder == copy and (copy / PROFILE_FILE).is_file()
    assert json.loads((copy / "config.json").read_text())[CONFIG_KEY]["profile"] == PROFILE_FILE
    assert tree_digest(copy)["model.safetensors"] == weights_before


LOADER = textwrap.dedent("""
    import json, sys
    import sparsetune  # the only sparsetune line a serving script needs
    cheap = not any(m in sys.modules for m in ("torch", "transformers"))
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], attn_implementation="sparsetune")
    result = {"cheap_import": cheap}
    for length in (20, 200):
        ids = torch.randint(8, 300, (1, length), generator=torch.Generator().manual_seed(length))
        with sparsetune.record_sparsity(model) as stats:
            tokens = model.generate(ids, max_new_tokens=4, do_sample=False)
        result[length] = {"tokens": tokens[0, length:].tolist(), **stats.to_dict()}
    print(json.dumps(result))
""")


def test_deployed_folder_generates_with_the_profile_after_import_sparsetune(model_dir, tmp_path):
    """A fresh interpreter: `import sparsetune` + plain from_pretrained/generate runs each length's bucket."""
    profile = make_profile(model_dir)
    out = deploy(profile, model_dir, tmp_path / "deployed").folder
    proc = subprocess.run([sys.executable, "-c", LOADER, str(out)], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["cheap_import"]  # registration waited for transformers; `import sparsetune` stayed light

    # Reference: the original folder, enabled by hand with the budget the profile gives that length.
    from sparsetune.runtime.hf_attention import enabled, record_sparsity
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa")
    layers, steps = 2, 4
    for length in (20, 200):
        budget = profile.lookup(length)
        assert (budget is None) == (length <= 64) and profile.lookup(length + steps) == budget
        ids = torch.randint(8, 300, (1, length), generator=torch.Generator().manual_seed(length))
        with enabled(ref, budget), record_sparsity(ref) as stats:
            tokens = ref.generate(ids, max_new_tokens=steps, do_sample=False)
        run = got[str(length)]
        assert run["tokens"] == tokens[0, length:].tolist()
        if budget is None:  # short prompt: the dense bucket, every call dense
            assert (run["sparse_calls"], run["dense_calls"]) == (0, layers * steps)
        else:  # long prompt: every call sparse, with the bucket's budget's achieved sparsity
            assert (run["sparse_calls"], run["dense_calls"]) == (layers * steps, 0)
            assert run["sparsity"] == pytest.approx(stats.sparsity) and run["sparsity"] > 0.3


def test_registration_is_immediate_when_transformers_is_loaded():
    code = ("import transformers.modeling_utils, sys\n"
            "import sparsetune\n"
            "from transformers import AttentionInterface\n"
            "assert 'sparsetune' in AttentionInterface(), 'not registered'\n"
            "assert not any(m in sys.modules for m in ('typer', 'rich'))\n"
            "assert callable(sparsetune.enable) and callable(sparsetune.disable)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_missing_profile_file_fails_loudly(model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = deploy(make_profile(model_dir), model_dir, tmp_path / "deployed").folder
    (out / PROFILE_FILE).unlink()
    model = AutoModelForCausalLM.from_pretrained(out, attn_implementation="sparsetune")
    with pytest.raises(ProfileError, match=r"config\.sparsetune\.profile: .*sparsetune_profile\.yaml is missing"):
        model(torch.tensor([[5, 6, 7]]))


# ---------------------------------------------------------------- guards


def test_profile_for_another_model_needs_force(run_cli, profile_path, tmp_path):
    other = save_folder(tmp_path / "other", num_hidden_layers=3)
    r = run_cli("apply", profile_path, "--model", other, "--out", tmp_path / "d")
    assert r.code == 2 and "tuned for model 'tiny'" in r.err and "--force" in r.err
    assert not (tmp_path / "d").exists()
    r = run_cli("apply", profile_path, "--model", other, "--out", tmp_path / "d", "--force")
    assert r.code == 0 and "applied anyway (--force)" in r.err
    # A deployed folder is still the same model: applying to it again needs no --force.
    r = run_cli("apply", profile_path, "--model", tmp_path / "d", "--out", tmp_path / "d2", "--force")
    assert r.code == 0 and "warning" in r.err  # profile is for `tiny`, folder is `other`


def test_gpu_without_tuned_configs_warns(model_dir):
    tuned = {GPU: DeviceSection(timing="measured", kernels={256: KernelConfig(BLOCK_M=16, BLOCK_N=16, num_warps=4,
                                                                               num_stages=2, ms=0.1)})}
    profile = make_profile(model_dir, devices=tuned)
    assert device_warning(profile, GPU) is None
    assert device_warning(profile, None) is None  # no GPU here: nothing to compare
    message = device_warning(profile, "NVIDIA A10G")
    assert "'NVIDIA H200'" in message and "'NVIDIA A10G'" in message and "default launch configs" in message
    cpu_only = make_profile(model_dir, devices={"cpu": DeviceSection(timing="cost-model", kernels={})})
    assert device_warning(cpu_only, "NVIDIA A10G") is None  # cost-model configs are the defaults anyway


def test_older_schema_is_explained_or_upgraded(run_cli, model_dir, profile_path, tmp_path, monkeypatch):
    now = versions.PROFILE_SCHEMA_VERSION
    old = tmp_path / "old.yaml"
    old.write_text(profile_path.read_text().replace(f"schema: {now}", "schema: 0"))
    r = run_cli("apply", old, "--format", "json")
    assert r.code == 2 and "schema: unknown version 0" in r.err
    monkeypatch.setitem(versions.UPGRADES, 0, lambda data: data)  # how a real upgrade step plugs in
    r = run_cli("apply", old, "--model", model_dir, "--out", tmp_path / "d")
    assert r.code == 0 and f"schema 0 was upgraded to {now}" in r.err
    assert f"schema: {now}" in (tmp_path / "d" / PROFILE_FILE).read_text()
    # A real step: schema 1 (no confirmation records) loads as the current schema.
    v1 = tmp_path / "v1.yaml"
    v1.write_text(profile_path.read_text().replace(f"schema: {now}", "schema: 1"))
    r = run_cli("apply", v1, "--model", model_dir, "--out", tmp_path / "d1")
    assert r.code == 0 and f"schema 1 was upgraded to {now}" in r.err


@pytest.mark.parametrize("args, message", [
    (["--format", "yaml"], "format: must be folder, json or hf-overrides"),
    (["--model", "MODEL"], "out: give the deploy folder"),
    (["--check"], "--check needs held-out samples"),
    (["--model", "MODEL", "--out", "OUT", "--in-place"], "either --out or --in-place"),
    (["--model", "demo", "--in-place"], "would modify the packaged demo model"),
    (["--model", "MODEL", "--out", "OUT", "--link", "copy"], "link: must be symlink or hardlink"),
    (["--model", "MODEL", "--out", "MODEL/inside"], "is inside the model folder"),
])
def test_bad_input_exits_2(run_cli, model_dir, profile_path, tmp_path, args, message):
    from sparsetune.workload.models import DEMO_MODEL

    if "demo" in args and not (DEMO_MODEL / "config.json").is_file():
        pytest.skip("the demo model is not in this checkout yet")
    args = [str(model_dir) if a == "MODEL" else str(tmp_path / "out") if a == "OUT" else
            a.replace("MODEL", str(model_dir)) for a in args]
    r = run_cli("apply", profile_path, *args, "--force")
    assert r.code == 2 and message in r.err, r.err
    assert r.err.count("\n") <= 2


# ---------------------------------------------------------------- exports


def test_json_table_round_trips_the_estimator_and_its_stride(model_dir):
    budget = Budget(keep=0.2, block_size=32, estimator="sampled", stride=8)
    profile = make_profile(model_dir, budget)
    table = lookup_table(profile)
    assert {(row.get("estimator"), row.get("stride")) for row in table["buckets"] if not row["dense"]} == {("sampled", 8)}
    policy = TablePolicy(json.loads(json.dumps(table)))
    assert [policy.lookup(n) for n in range(0, 1500, 7)] == [profile.lookup(n) for n in range(0, 1500, 7)]
    assert budget in {policy.lookup(n) for n in range(1500)}


def test_json_table_looks_up_like_the_profile(run_cli, model_dir, profile_path, tmp_path):
    tuned = {GPU: DeviceSection(timing="measured", kernels={512: KernelConfig(BLOCK_M=16, BLOCK_N=16, num_warps=4,
                                                                               num_stages=2, ms=0.1)})}
    profile = make_profile(model_dir, Budget(method="coverage", tau=0.9, block_size=32, sink=0, local=2),
                           devices=tuned)
    profile = Profile.from_dict({**profile.to_dict(), "min_len": 8})
    profile.save(profile_path)
    r = run_cli("apply", profile_path, "--format", "json")
    assert r.code == 0, r.err
    table = json.loads(r.out)
    assert table == lookup_table(profile)
    assert [(b["min_len"], b["max_len"], b["dense"]) for b in table["buckets"]] == [
        (8, 64, True), (65, 256, False), (257, None, False)]
    assert table["buckets"][2]["kernels"] == {GPU: {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 2}}
    assert table["buckets"][1] == {"min_len": 65, "max_len": 256, "dense": False, "method": "coverage",
                                   "block_size": 32, "tau": 0.9, "sink": 0, "local": 2, "estimator": "pooled",
                                   "kernels": {}}
    policy = TablePolicy(table)
    for length in range(0, 1500):
        assert policy.lookup(length) == profile.lookup(length), length
        assert policy.kernel_config(length, GPU) == (None if profile.kernel_config(length, GPU) is None else
                                                     KernelConfig(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=2))

    out = tmp_path / "overrides.json"
    assert run_cli("apply", profile_path, "--format", "hf-overrides", "-o", out).code == 0
    overrides = json.loads(out.read_text())
    assert overrides == hf_overrides(profile) == {CONFIG_KEY: table}


def test_hf_overrides_entry_drives_transformers_too(model_dir):
    """The table vLLM gets as config.sparsetune also works as the config entry in transformers."""
    from sparsetune.runtime.hf_attention import record_sparsity
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sparsetune")
    setattr(model.config, CONFIG_KEY, lookup_table(make_profile(model_dir)))
    with record_sparsity(model) as stats, torch.no_grad():
        model(torch.randint(8, 300, (1, 100)))
    assert stats.sparse_calls == 2 and stats.sparsity > 0.3


def test_bad_config_entries_name_the_field():
    class Config:
        name_or_path = ""

    config = Config()
    for entry, message in [
        ("x", "config.sparsetune: must be an object"),
        ({"profile": PROFILE_FILE, "version": 2}, "config.sparsetune.version: this sparsetune reads 1, got 2"),
        ({"profile": "", "version": 1}, "config.sparsetune.profile: must be the profile's file name"),
        ({"profile": PROFILE_FILE, "version": 1}, "was not loaded from a folder"),
        ({"format": "sparsetune-lookup", "version": 1, "buckets": [{"min_len": 1, "max_len": None, "dense": False,
                                                                   "method": "topk", "block_size": 16, "keep": 2.0,
                                                                   "sink": 1, "local": 1}]},
         r"config.sparsetune.buckets[0]: keep: must be in (0, 1], got 2.0"),
    ]:
        config.sparsetune = entry
        with pytest.raises(ProfileError) as info:
            policy_from_config(config)
        assert message in str(info.value)


# ---------------------------------------------------------------- the held-out gate


def _workload(path: Path, lengths: list[int]) -> Path:
    g = torch.Generator().manual_seed(3)
    rows = [{"input_ids": [2] + torch.randint(8, 300, (n - 1,), generator=g).tolist(), "task": "copy"}
            for n in lengths]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("budget, code", [
    (Budget(keep=0.02, block_size=16, sink=0, local=1), 1),  # deliberately too aggressive
    (Budget(keep=0.999, block_size=16, sink=1, local=1), 0),  # the sparse path, keeping every block
])
def test_check_gate_exit_codes(run_cli, model_dir, tmp_path, budget, code):
    profile = tmp_path / "p.yaml"
    make_profile(model_dir, budget, confidence=None).save(profile)
    work = _workload(tmp_path / "held.jsonl", [30, 200, 200, 220, 230, 240])
    out = tmp_path / "deployed"
    r = run_cli("apply", profile, "-m", model_dir, "--check", "-w", work, "-o", out, "--json", "--answer-tokens", "4")
    assert r.code == code, r.err
    report = json.loads(r.out)["check"]
    verdicts = [(b["first"], b["n"], b["verdict"]) for b in report["buckets"]]
    assert verdicts == [(1, 1, "dense"), (65, 5, "fail" if code else "pass"), (257, 0, "untested")]
    assert [b["method"] for b in report["buckets"]] == [None, "pooled", "pooled"]  # the gate names the method
    assert out.exists() == (code == 0)  # a failed gate deploys nothing
    sparse = report["buckets"][1]
    assert sparse["dense"] == 1.0 and sparse["measured"] == sparse["sparse"]  # fidelity mode; no confidence set
    if code:
        r = run_cli("apply", profile, "-m", model_dir, "--check", "-w", work, "--answer-tokens", "4")
        assert r.code == 1 and "fail" in r.out and "lower" in r.out and "upper" in r.out


def test_check_shows_progress_per_batch(run_cli, model_dir, tmp_path, monkeypatch):
    from sparsetune.cli.progress import StepProgress

    monkeypatch.setattr(StepProgress.__init__, "__defaults__", (0.0, 0.0))  # say everything at once
    profile = tmp_path / "p.yaml"
    make_profile(model_dir, Budget(keep=0.999, block_size=16, sink=1, local=1), confidence=None).save(profile)
    work = _workload(tmp_path / "held.jsonl", [30, 200, 200, 220, 230, 240])
    r = run_cli("apply", profile, "-m", model_dir, "--check", "-w", work, "--json", "--answer-tokens", "4")
    assert r.code == 0, r.err
    said = [line.split(": ")[-1] for line in r.err.splitlines() if " samples, " in line]
    # Fidelity answers for all 6, then dense and profile runs of the 5 samples in the one sparse bucket, counted
    # as samples (a sample is done once both its runs are).
    assert said[0].startswith("answers 6/6 samples")
    assert [x.split(" samples")[0] for x in said[1:]] == ["evaluate 2/5", "evaluate 5/5"]
    json.loads(r.out)


@pytest.mark.slow
def test_gate_on_heldout_conservative_passes_aggressive_fails_demo_as_measured(run_cli, tmp_path):
    """The gate on the demo's held-out split: a conservative budget passes, a far too small one fails,
    and the searched demo profile gets the exit code its own per-bucket verdicts imply."""
    demo = REPO / "profiles" / "demo.yaml"
    base = load_profile(demo).to_dict()

    def variant(name: str, budget: dict) -> Path:
        data = json.loads(json.dumps(base))
        for bucket in data["buckets"]:
            bucket.pop("dense", None)
            bucket.pop("reason", None)
            bucket["budget"] = budget
        data["method"], data["devices"] = "topk", {}
        path = tmp_path / f"{name}.yaml"
        Profile.from_dict(data).save(path)
        return path

    def check(path: Path, workload: str | Path = "demo-heldout"):
        r = run_cli("apply", path, "--model", "demo", "--check", "--workload", workload, "--json")
        return r.code, json.loads(r.out)["check"]["buckets"] if r.out else r.err

    # Conservative and aggressive budgets on a slice of the held-out split (8 per task and length).
    rows, seen = [], {}
    for line in (REPO / "sparsetune" / "demo" / "heldout.jsonl").read_text().splitlines():
        row = json.loads(line)
        key = (len(row["prompt"].split()), row["task"])
        if seen.get(key, 0) < 8:
            seen[key] = seen.get(key, 0) + 1
            rows.append(line)
    part = tmp_path / "heldout_slice.jsonl"
    part.write_text("\n".join(rows) + "\n")
    code, rows = check(variant("conservative", {"method": "topk", "block_size": 16, "keep": 0.97, "sink": 1,
                                                "local": 2}), part)
    assert code == 0, rows
    code, rows = check(variant("aggressive", {"method": "topk", "block_size": 16, "keep": 0.02, "sink": 0,
                                              "local": 1}), part)
    assert code == 1 and any(b["verdict"] == "fail" and b["beyond_noise"] for b in rows), rows
    # The shipped profile, chosen with confirmation, holds on the whole held-out split it never saw (issue 13),
    # with at least two sparse buckets; each verdict follows from the measured accuracy and the floor.
    code, rows = check(demo)
    judged = [b for b in rows if b["verdict"] in ("pass", "fail")]
    assert len(judged) >= 2 and all(b["verdict"] == "pass" and b["measured"] >= b["floor"] - 1e-12
                                    for b in judged), rows
    assert code == 0


def test_import_cost_stays_low():
    code = "import sys, sparsetune; print(sorted(m for m in ('torch', 'transformers', 'typer', 'rich') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ})
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr

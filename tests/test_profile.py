"""Profile format: round trips, lookup, kernel configs, atomic save, schema sync, import weight."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparsetune
from sparsetune import (
    Accuracy,
    Bucket,
    Budget,
    DeviceSection,
    Floor,
    KernelConfig,
    ModelInfo,
    Profile,
    ProfileError,
    Provenance,
    TaskAccuracy,
    WorkloadInfo,
    load_profile,
)
from sparsetune import _io
from sparsetune.profile import profile as profile_module
from sparsetune.profile import schema as schema_module
from sparsetune.profile import versions

REPO = Path(__file__).resolve().parents[1]
SHA = "0" * 63 + "1"
EXAMPLE = REPO / "profiles" / "example.yaml"
EXAMPLE_RAW = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- strategies for valid profiles

unit = st.floats(0, 1, allow_nan=False)
names = st.text(min_size=1, max_size=12)
pow2 = st.sampled_from([16, 32, 64, 128, 256, 1024])


@st.composite
def budgets(draw: Any, method: str) -> Budget:
    ratio = draw(st.floats(0, 1, exclude_min=True))
    kw = {"keep": ratio} if method == "topk" else {"tau": ratio}
    return Budget(method=method, block_size=draw(pow2), sink=draw(st.integers(0, 4)),
                  local=draw(st.integers(1, 4)), **kw)


accuracies = st.builds(
    Accuracy, sparse=unit, dense=unit, lower_bound=st.none() | unit, n=st.integers(1, 10_000),
    per_task=st.none() | st.dictionaries(names, st.builds(TaskAccuracy, sparse=unit, dense=unit,
                                                           n=st.integers(1, 100)), max_size=3))


@st.composite
def buckets(draw: Any, max_len: int, method: str) -> Bucket:
    dense = draw(st.booleans())
    return Bucket(
        max_len=max_len, dense=dense,
        reason=draw(names) if dense else draw(st.none() | names),
        budget=None if dense else draw(budgets(method)),
        accuracy=draw(st.none() | accuracies), sparsity=draw(st.none() | unit),
        cost=draw(st.none() | st.floats(0, 100)),
    )


@st.composite
def kernel_configs(draw: Any, block_size: int, measured: bool) -> KernelConfig:
    ms = st.none() | st.floats(1e-6, 1e4) if measured else st.none()
    tiles = [b for b in (16, 32, 64, 128, 256) if block_size % b == 0]  # the launcher's rule: both tiles divide
    block_m = draw(st.sampled_from(tiles))
    return KernelConfig(BLOCK_M=block_m, BLOCK_N=draw(st.sampled_from(tiles)),
                        num_warps=draw(st.sampled_from([1, 2, 4] + ([8] if block_m >= 64 else []))),
                        num_stages=draw(st.integers(1, 6)),
                        ms=draw(ms), dense_ms=draw(ms), selection_ms=draw(ms),
                        timed_at=draw(st.none() | st.integers(1, 10**6)))


@st.composite
def profiles(draw: Any) -> Profile:
    method = draw(st.sampled_from(["topk", "coverage"]))
    edges = sorted(draw(st.sets(st.integers(1, 2**40), min_size=1, max_size=5)))
    bucket_list = [draw(buckets(e, method)) for e in edges]
    sparse = [b for b in bucket_list if not b.dense]
    devices = {}
    for name in draw(st.lists(names.filter(str.strip), max_size=2, unique=True)):
        measured = draw(st.booleans())
        chosen = draw(st.lists(st.sampled_from(sparse), unique_by=lambda b: b.max_len)) if sparse else []
        devices[name] = DeviceSection(timing="measured" if measured else "cost-model",
                                      kernels={b.max_len: draw(kernel_configs(b.budget.block_size, measured))
                                               for b in chosen})
    heads = draw(st.integers(1, 64))
    return Profile(
        model=ModelInfo(name=draw(names), config_sha256=SHA, layers=draw(st.integers(1, 200)), heads=heads,
                        kv_heads=draw(st.sampled_from([d for d in range(1, heads + 1) if heads % d == 0])),
                        head_dim=draw(st.integers(1, 512)),
                        max_positions=draw(st.none() | st.integers(edges[-1], 2**41))),
        workload=WorkloadInfo(name=draw(names), sha256=SHA, samples=draw(st.integers(1, 10**6))),
        floor=Floor(kind=draw(st.sampled_from(["relative", "absolute"])), value=draw(st.floats(0, 1, exclude_min=True)),
                    confidence=draw(st.none() | st.floats(0, 1, exclude_max=True))),
        method=method,
        provenance=Provenance(sparsetune="0.1.0", created="2026-11-28T10:00:00+00:00", study=draw(names),
                              trials_per_bucket=draw(st.integers(0, 1000)), seed=draw(st.integers(0, 2**32)),
                              storage=draw(st.none() | names)),
        min_len=draw(st.integers(1, edges[0])),
        buckets=bucket_list,
        devices=devices,
    )


# ---------------------------------------------------------------- round trips


@FAST
@given(profile=profiles())
def test_valid_profiles_round_trip_through_save_and_load(tmp_path_factory, profile):
    path = tmp_path_factory.mktemp("rt") / "profile.yaml"
    profile.save(path)
    loaded = load_profile(path)
    assert loaded == profile
    assert loaded.to_yaml() == path.read_text(encoding="utf-8")  # stable text: saving again changes nothing
    assert Profile.from_dict(json.loads(profile.to_json())) == profile
    assert Profile.from_dict(profile.to_dict()) == profile


def test_example_round_trips_and_dump_order_is_stable(example_path):
    profile = load_profile(example_path)
    data = profile.to_dict()
    assert list(data) == ["schema", "model", "workload", "floor", "method", "provenance", "min_len",
                          "buckets", "devices"]
    assert list(data["buckets"][1]) == ["max_len", "budget", "accuracy", "confirmation", "bound_by", "sparsity", "cost"]
    assert "dense" not in data["buckets"][1] and data["buckets"][0]["dense"] is True
    assert list(data["devices"]["cpu"]["kernels"]) == [1024, 2048]
    assert Profile.from_yaml(profile.to_yaml()) == profile
    # any standard YAML reader gets the same data (timestamps stay text thanks to the quotes)
    assert yaml.safe_load(profile.to_yaml()) == data


def test_from_dict_does_not_mutate_its_input(example_dict):
    before = copy.deepcopy(example_dict)
    del example_dict["buckets"][1]["budget"]["method"]
    expected = copy.deepcopy(example_dict)
    Profile.from_dict(example_dict)
    assert example_dict == expected and before != expected


def test_budget_method_defaults_to_the_profiles(example_dict):
    example_dict["method"] = "coverage"
    example_dict["buckets"][1]["budget"] = {"tau": 0.9, "block_size": 64}
    example_dict["buckets"][2]["budget"] = {"tau": 0.8}
    profile = Profile.from_dict(example_dict)
    assert profile.lookup(2000) == Budget(method="coverage", tau=0.8)
    assert profile.to_dict()["buckets"][1]["budget"]["method"] == "coverage"  # written explicitly


# ---------------------------------------------------------------- mutations raise only ProfileError

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
    st.sampled_from(["topk", "coverage", "measured", "cost-model", 16, 64, 1024, 0, 1, 0.5, "2026-11-28T10:00:00Z"]),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(data: dict[str, Any], draw: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(data)))
        if not path:
            if draw(st.booleans()):
                return draw(junk)
            continue
        parent: Any = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["set", "delete", "add"]))
            if action == "set":
                parent[path[-1]] = draw(junk)
            elif action == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.one_of(st.text(max_size=6), st.integers(), st.none()))] = draw(junk)
            else:
                parent.append(draw(junk))
        except (KeyError, IndexError, TypeError):  # an earlier mutation removed or replaced the path
            continue
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_mutations_raise_only_profile_error(data):
    mutated = _mutate(EXAMPLE_RAW, data.draw)
    try:
        Profile.from_dict(mutated)
    except ProfileError as exc:
        message = str(exc)
        assert "\n" not in message and ": " in message
    text = yaml.safe_dump(mutated, sort_keys=False, allow_unicode=True)
    try:
        Profile.from_yaml(text)
    except ProfileError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_text_edits_raise_only_profile_error(data):
    text = EXAMPLE.read_text(encoding="utf-8")
    for _ in range(data.draw(st.integers(1, 3))):
        start = data.draw(st.integers(0, len(text)))
        stop = data.draw(st.integers(start, min(len(text), start + 8)))
        text = text[:start] + data.draw(st.text(max_size=4)) + text[stop:]
    try:
        Profile.from_yaml(text, source="edited.yaml")
    except ProfileError as exc:
        assert str(exc).startswith("edited.yaml") and "\n" not in str(exc)


@FAST
@given(profile=profiles())
def test_built_in_code_is_validated_too(profile):
    """Search builds profiles in code: the same rules apply, e.g. BLOCK_N must divide the block size."""
    sparse = [b for b in profile.buckets if not b.dense]
    if sparse:
        bucket = sparse[0]
        bad = KernelConfig(BLOCK_M=64, BLOCK_N=256, num_warps=4, num_stages=2)
        if bucket.budget.block_size % 256:
            with pytest.raises(ProfileError, match=r"kernels\[\d+\]\.BLOCK_N: must divide"):
                profile.with_device("x", DeviceSection(timing="cost-model", kernels={bucket.max_len: bad}))
        if bucket.budget.block_size < 128:  # BLOCK_M must divide the block size as well (the launcher's rule)
            tall = KernelConfig(BLOCK_M=128, BLOCK_N=16, num_warps=4, num_stages=2)
            with pytest.raises(ProfileError, match=r"kernels\[\d+\]\.BLOCK_M: must divide"):
                profile.with_device("x", DeviceSection(timing="cost-model", kernels={bucket.max_len: tall}))
    with pytest.raises(ProfileError, match=r"^buckets\[0\]\.max_len: must be <= model\.max_positions"):
        dataclasses.replace(profile, model=dataclasses.replace(profile.model, max_positions=profile.edges[-1] + 1),
                            buckets=[dataclasses.replace(profile.buckets[0], max_len=profile.edges[-1] + 2)])


def test_numpy_like_numbers_are_normalised():
    """Plain Python numbers come out, so YAML can write values computed with numpy or torch."""

    class Float(float):
        pass

    acc = Accuracy(sparse=Float(0.5), dense=1, n=True + 1)
    assert type(acc.sparse) is float and type(acc.dense) is float and acc.dense == 1.0
    with pytest.raises(ProfileError, match="n: must be an integer, got True"):
        Accuracy(sparse=0.5, dense=1.0, n=True)


# ---------------------------------------------------------------- lookup


def _profile(buckets_: list[Bucket], min_len: int = 1, devices: dict[str, DeviceSection] | None = None) -> Profile:
    base = load_profile(EXAMPLE)
    return dataclasses.replace(base, model=dataclasses.replace(base.model, max_positions=None), buckets=buckets_,
                               min_len=min_len, devices=devices or {})


K = {k: Budget(keep=k) for k in (0.5, 0.3, 0.2)}


@pytest.mark.parametrize(("seq_len", "expected"), [
    (0, None), (1, None), (511, None), (512, None),            # below min_len: dense
    (513, K[0.5]), (1024, K[0.5]),                              # exact upper edge belongs to the bucket
    (1025, K[0.3]), (2048, K[0.3]),                             # bucket 2 is dense
    (2049, None), (4096, None),
    (4097, K[0.2]), (8192, K[0.2]), (10**12, K[0.2]),           # beyond the last edge: last budget
])
def test_lookup_edges(seq_len, expected):
    profile = _profile([Bucket(max_len=1024, budget=K[0.5]), Bucket(max_len=2048, budget=K[0.3]),
                        Bucket(max_len=4096, dense=True, reason="floor"), Bucket(max_len=8192, budget=K[0.2])],
                       min_len=513)
    assert profile.lookup(seq_len) == expected


def test_lookup_from_length_one_and_dense_last_bucket():
    profile = _profile([Bucket(max_len=256, budget=K[0.5]), Bucket(max_len=1024, dense=True, reason="floor")])
    assert profile.lookup(0) is None  # a request with no tokens is below min_len=1
    assert profile.lookup(1) == K[0.5] and profile.lookup(256) == K[0.5]
    assert profile.lookup(257) is None and profile.lookup(10**9) is None
    assert profile.bucket_index(10**9) == 1 and profile.bucket_index(0) is None
    assert profile.bucket_range(0) == (1, 256) and profile.bucket_range(1) == (257, 1024)
    with pytest.raises(ValueError, match="seq_len: must be >= 0, got -1"):
        profile.lookup(-1)


@FAST
@given(profile=profiles(), seq_len=st.integers(0, 2**41))
def test_lookup_matches_a_linear_scan(profile, seq_len):
    expected = None
    if seq_len >= profile.min_len:
        chosen = next((b for b in profile.buckets if seq_len <= b.max_len), profile.buckets[-1])
        expected = None if chosen.dense else chosen.budget
    assert profile.lookup(seq_len) == expected
    if profile.edges:
        edge = profile.edges[0]
        assert profile.lookup(edge) == (None if profile.buckets[0].dense else profile.buckets[0].budget)


def test_kernel_config(example_path):
    profile = load_profile(example_path)
    config = profile.kernel_config(700, "cpu")
    assert config is not None and (config.BLOCK_M, config.BLOCK_N) == (64, 64)
    assert profile.kernel_config(1025, "cpu").BLOCK_N == 32
    assert profile.kernel_config(10**7, "cpu").BLOCK_N == 32  # beyond the last edge: last bucket's
    assert profile.kernel_config(100, "cpu") is None  # dense bucket
    assert profile.kernel_config(700, "NVIDIA H100 80GB HBM3") is None  # not timed on that device
    timed = profile.with_device("NVIDIA H100 80GB HBM3", DeviceSection(timing="measured", kernels={
        1024: KernelConfig(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=3, ms=0.2, dense_ms=0.4)}))
    assert timed.kernel_config(700, "NVIDIA H100 80GB HBM3").num_warps == 8
    assert timed.kernel_config(1500, "NVIDIA H100 80GB HBM3") is None
    assert list(timed.devices) == ["cpu", "NVIDIA H100 80GB HBM3"] and profile.devices.keys() == {"cpu"}


def test_provenance_create_stamps_version_and_hides_passwords():
    p = Provenance.create(study="s", trials_per_bucket=3, seed=1, storage="postgresql://me:secret@db:5432/opt")
    assert p.sparsetune == sparsetune.__version__ and p.created.endswith("Z")
    assert p.storage == "postgresql://me:***@db:5432/opt"
    assert Provenance.create(study="s", trials_per_bucket=3, seed=1, storage="sqlite:///x.db").storage == "sqlite:///x.db"


# ---------------------------------------------------------------- atomic save


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_save_writes_yaml_and_leaves_no_temp_files(tmp_path, example_path):
    profile = load_profile(example_path)
    target = tmp_path / "p.yaml"
    profile.save(target)
    assert _listing(tmp_path) == ["p.yaml"]
    assert target.read_text(encoding="utf-8") == profile.to_yaml()
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # like open(), not mkstemp's 0600


@pytest.mark.parametrize("failure", ["serialize", "fsync", "replace", "interrupt"])
def test_failed_save_keeps_the_old_file(tmp_path, example_path, monkeypatch, failure):
    profile = load_profile(example_path)
    target = tmp_path / "p.yaml"
    target.write_text("old contents\n", encoding="utf-8")

    def boom(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt if failure == "interrupt" else OSError(5, "Input/output error")

    if failure == "serialize":
        monkeypatch.setattr(profile_module._yaml, "dump", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
        expected: type[BaseException] = RuntimeError
    elif failure == "fsync":
        monkeypatch.setattr(_io.os, "fsync", boom)
        expected = ProfileError
    else:
        monkeypatch.setattr(_io.os, "replace", boom)
        expected = KeyboardInterrupt if failure == "interrupt" else ProfileError
    with pytest.raises(expected):
        profile.save(target)
    assert target.read_text(encoding="utf-8") == "old contents\n"
    assert _listing(tmp_path) == ["p.yaml"]


def test_save_into_a_missing_folder_is_a_profile_error(tmp_path, example_path):
    with pytest.raises(ProfileError, match=r"nope/p\.yaml: cannot write: No such file or directory"):
        load_profile(example_path).save(tmp_path / "nope" / "p.yaml")


# ---------------------------------------------------------------- schema


def test_shipped_schema_is_generated_from_the_code():
    shipped = (REPO / "profiles" / "profile.schema.json").read_text(encoding="utf-8")
    assert shipped == schema_module.json_schema_text(), (
        "profiles/profile.schema.json is stale: python -m sparsetune.profile.schema > profiles/profile.schema.json")


def test_schema_covers_every_field():
    schema = schema_module.json_schema()
    classes = {"Profile": Profile, "ModelInfo": ModelInfo, "WorkloadInfo": WorkloadInfo, "Floor": Floor,
               "Provenance": Provenance, "Bucket": Bucket, "Budget": Budget, "Accuracy": Accuracy,
               "TaskAccuracy": TaskAccuracy, "DeviceSection": DeviceSection, "KernelConfig": KernelConfig}
    for name, cls in classes.items():
        node = schema if name == "Profile" else schema["$defs"][name]
        assert list(node["properties"]) == [f.name for f in dataclasses.fields(cls)], name
        assert node["additionalProperties"] is False
        assert all("description" in prop for prop in node["properties"].values()), name
    assert schema["required"][0] == "schema"
    assert schema["$defs"]["Budget"]["properties"]["keep"]["maximum"] == 1


def test_schema_module_check(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "sparsetune.profile.schema", "--check",
                         str(REPO / "profiles" / "profile.schema.json")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    stale = tmp_path / "s.json"
    stale.write_text("{}\n")
    bad = subprocess.run([sys.executable, "-m", "sparsetune.profile.schema", "--check", str(stale)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "out of date" in bad.stderr


# ---------------------------------------------------------------- runtime import weight


def test_runtime_api_imports_without_typer_or_rich():
    code = ("import sys, sparsetune; p = sparsetune.load_profile(sys.argv[1]); p.lookup(700); "
            "print(sorted(m for m in ('typer', 'rich', 'click') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(EXAMPLE)],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_schema_version_constant_and_upgrade_hook(example_dict, monkeypatch):
    assert example_dict["schema"] == 2  # the shipped example is a schema-2 file, read through the upgrade
    assert sparsetune.PROFILE_SCHEMA_VERSION == 3 == Profile.from_dict(example_dict).schema
    assert all(b.budget is None or b.budget.estimator == "pooled" for b in Profile.from_dict(example_dict).buckets)
    # An upgrade step for an older version is applied before validation.
    monkeypatch.setitem(versions.UPGRADES, 0, lambda d: {**{k: v for k, v in d.items() if k != "first_len"}, "min_len": d["first_len"]})
    old = {**example_dict, "schema": 0, "first_len": 5}
    del old["min_len"]
    assert Profile.from_dict(old).min_len == 5


def test_floats_survive_yaml_exactly(example_dict):
    example_dict["buckets"][1]["accuracy"]["sparse"] = 1e-300
    example_dict["buckets"][1]["cost"] = 12345.678901234567
    profile = Profile.from_dict(example_dict)
    again = Profile.from_yaml(profile.to_yaml())
    assert again.buckets[1].accuracy.sparse == 1e-300 and again.buckets[1].cost == 12345.678901234567
    assert not math.isnan(again.buckets[1].cost)


@pytest.mark.parametrize("block_size", [16, 32, 64, 128])
def test_profile_validation_and_the_kernel_launcher_accept_the_same_configs(example_dict, block_size):
    """One rule (kernels/configs.py): a profile that validates never makes the launcher raise, and back."""
    from sparsetune.kernels.configs import CONFIGS, keep_config

    for conf in CONFIGS:
        data = copy.deepcopy(example_dict)
        data["buckets"][1]["budget"]["block_size"] = block_size
        edge = data["buckets"][1]["max_len"]
        data["devices"] = {"gpu": {"timing": "cost-model", "kernels": {edge: dict(conf)}}}
        try:
            Profile.from_dict(data)
            accepted = True
        except ProfileError as exc:
            assert "kernels[" in str(exc), exc
            accepted = False
        assert accepted == keep_config(conf, block_size), (conf, block_size)

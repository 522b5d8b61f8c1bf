"""What one bucket's study is about (`BucketMeta`), and its plain-JSON form: the study's ``meta`` user attr, which
`study.create_or_load` writes once and `study.meta_of` reads. The layout is unchanged from earlier versions (new
fields are written only when they differ from what an older study means), so existing storages resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..profile.profile import Floor, ModelInfo, WorkloadInfo
from .confirm import CONFIRM_LIMIT

__all__ = ["BucketMeta"]


@dataclass(frozen=True)
class BucketMeta:
    """What one bucket's study is about: written once by the worker that creates the study."""

    identity: dict[str, Any]  # model, workload, floor, method, edges: a resumed run must match it
    model: ModelInfo
    workload: WorkloadInfo
    floor: Floor
    method: str
    timing: str  # measured | cost-model
    device: str  # device key of the kernel configs (GPU name, or "cpu")
    index: int  # bucket index
    first_len: int  # shortest sample length in the bucket's range
    max_len: int  # the bucket's edge
    n: int  # samples in the bucket
    rep_len: int  # representative KV length, for the attention cost
    tasks: list[str]  # the bucket's samples' tasks, in order
    edges: list[int]  # every bucket's edge
    min_len: int  # the shortest KV length any sample's forward sees (the profile's min_len)
    trials: int  # complete trials per bucket
    seed: int
    study: str  # study name prefix
    storage: str | None  # the storage URL as given (redacted when written into a profile)
    confirm_n: int = 0  # samples in the bucket's confirmation part (never explored by the search)
    confirm_tasks: list[str] = field(default_factory=list)  # their tasks, in order
    confirm_limit: int = CONFIRM_LIMIT  # failed confirmations below the choice after which nothing cheaper is confirmed
    # Block sizes the study searches (`SearchSpace.at_length`); None: written by an earlier version, which
    # searched every block size of the space.
    block_sizes: tuple[int, ...] | None = None
    estimators: tuple[str, ...] = ("pooled",)  # the estimators the study chooses among (SearchSpace.estimators)
    dense_layers: tuple[int, ...] = (0,)  # SearchSpace.dense_layers
    dense_tails: tuple[int, ...] = (0,)  # SearchSpace.dense_tails
    # The bucket's share of the workload's dense attention FLOPs, and the share below which it is left dense
    # unsearched (`SearchSettings.min_share`); None: written before buckets could be left dense.
    dense_share: float | None = None
    min_share: float = 0.0

    @property
    def left_dense(self) -> bool:
        """Too small a part of the workload's attention cost for any budget to save much: only the dense
        baseline runs, and the profile keeps the bucket dense."""
        return self.dense_share is not None and self.dense_share < self.min_share

    @property
    def target(self) -> int:
        """Complete trials the bucket needs: its dense baseline alone when it is left dense."""
        return 1 if self.left_dense else self.trials

    def to_attr(self) -> dict[str, Any]:
        """The JSON the study stores (the layout earlier versions wrote)."""
        return {
            "identity": self.identity, "model": _plain(self.model), "workload": _plain(self.workload),
            "floor": {"kind": self.floor.kind, "value": self.floor.value, "confidence": self.floor.confidence,
                      "per_task": self.floor.per_task},
            "method": self.method, "timing": self.timing, "device": self.device,
            "bucket": {"index": self.index, "min_len": self.first_len, "max_len": self.max_len, "n": self.n},
            "rep_len": self.rep_len, "tasks": list(self.tasks), "edges": list(self.edges), "min_len": self.min_len,
            "trials": self.trials, "seed": self.seed, "study": self.study, "storage": self.storage,
            "confirm": {"n": self.confirm_n, "tasks": list(self.confirm_tasks), "limit": self.confirm_limit},
            **({"block_sizes": list(self.block_sizes)} if self.block_sizes is not None else {}),
            **({"estimators": list(self.estimators)} if self.estimators != ("pooled",) else {}),
            **({"dense_layers": list(self.dense_layers)} if self.dense_layers != (0,) else {}),
            **({"dense_tails": list(self.dense_tails)} if self.dense_tails != (0,) else {}),
            **({"share": {"dense": self.dense_share, "min": self.min_share}} if self.dense_share is not None else {}),
        }

    @classmethod
    def from_attr(cls, d: dict[str, Any]) -> BucketMeta:
        b, f, c = d["bucket"], d["floor"], d.get("confirm", {})
        return cls(identity=d["identity"], model=ModelInfo(**d["model"]), workload=WorkloadInfo(**d["workload"]),
                   floor=Floor(kind=f["kind"], value=f["value"], confidence=f["confidence"],
                               per_task=bool(f.get("per_task", False))), method=d["method"],
                   timing=d["timing"], device=d["device"], index=b["index"], first_len=b["min_len"],
                   max_len=b["max_len"], n=b["n"], rep_len=d["rep_len"], tasks=list(d["tasks"]),
                   edges=list(d["edges"]), min_len=d["min_len"], trials=d["trials"], seed=d["seed"],
                   study=d["study"], storage=d["storage"], confirm_n=c.get("n", 0),
                   confirm_tasks=list(c.get("tasks", [])), confirm_limit=c.get("limit", CONFIRM_LIMIT),
                   block_sizes=tuple(d["block_sizes"]) if d.get("block_sizes") is not None else None,
                   estimators=tuple(d.get("estimators", ("pooled",))),
                   dense_layers=tuple(d.get("dense_layers", (0,))), dense_tails=tuple(d.get("dense_tails", (0,))),
                   dense_share=d.get("share", {}).get("dense"), min_share=d.get("share", {}).get("min", 0.0))


def _plain(info: Any) -> dict[str, Any]:
    return {k: getattr(info, k) for k in info.__dataclass_fields__}

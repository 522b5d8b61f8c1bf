"""What `sparsetune serve` serves: a model folder and the profile it runs, checked before anything loads.

Two ways in, one result (`Target`):

- a deploy folder made by `sparsetune apply`: its config.json entry names the profile beside it;
- a model folder (or `demo`) plus ``--profile P.yaml``; an explicit profile also overrides a deploy
  folder's own.

Refused (ServeError, DeployError, ProfileError or ModelError: the CLI's exit 2, one line naming the file
or field): no profile at all, a profile file that is missing or malformed, an inline lookup table (it
carries no model identity to check), a profile tuned for another model (config hash; a profile's budgets
hold only for its model), and GGUF files (deploy them first: `apply` converts them to a folder).

Nothing here imports torch or transformers: a wrong folder is refused in well under a second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from ..deploy import check_model, model_folder
from ..errors import ServeError
from ..profile.profile import Profile, load_profile
from ..runtime.policy import CONFIG_KEY, policy_from_config

__all__ = ["Target", "resolve_target"]


@dataclass(frozen=True)
class Target:
    model: Path  # the folder transformers loads
    profile: Profile
    profile_path: Path
    model_id: str  # what clients pass as "model" (and /v1/models lists): the folder's path

    def describe(self) -> str:
        """One line for the startup message: buckets and where the profile runs dense."""
        ranges = [f"{span.label} dense" if bucket.dense or bucket.budget is None else span.label
                  for span, bucket in zip(self.profile.spans, self.profile.buckets)]
        below = f"dense below {self.profile.min_len}, " if self.profile.min_len > 1 else ""
        return f"profile {self.profile_path} ({below}buckets {', '.join(ranges)})"


def resolve_target(folder: str, profile: Path | str | None = None) -> Target:
    """The model folder and profile to serve, or a one-line error naming what is wrong."""
    path = model_folder(folder)
    if path.is_file():
        raise ServeError(f"model: {path} is a GGUF file; serve the converted folder `sparsetune apply "
                         f"PROFILE --model {folder} --out DIR` writes")
    if profile is not None:
        profile_path = Path(profile).expanduser()
        loaded = load_profile(profile_path)
    else:
        profile_path, loaded = _embedded_profile(path)
    check_model(loaded, path)  # DeployError: tuned for another model
    return Target(model=path, profile=loaded, profile_path=profile_path, model_id=str(path))


def _embedded_profile(folder: Path) -> tuple[Path, Profile]:
    config = folder / "config.json"
    try:
        entry = json.loads(config.read_text(encoding="utf-8")).get(CONFIG_KEY)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise ServeError(f"{config}: cannot read the model config: {exc}") from None
    if entry is None:
        raise ServeError(f"{config}: no {CONFIG_KEY!r} entry, so {folder} is not a deploy folder; make one with "
                         "`sparsetune apply PROFILE --model MODEL --out DIR`, or pass --profile PROFILE")
    policy = policy_from_config(SimpleNamespace(**{CONFIG_KEY: entry, "name_or_path": str(folder)}))
    if not isinstance(policy, Profile):
        raise ServeError(f"{config}: {CONFIG_KEY} holds an inline lookup table, which names no model to check; "
                         "serve a folder made by `sparsetune apply`, or pass --profile PROFILE")
    return folder / entry["profile"], policy

"""What a run came from, recorded so that its card can claim exactly that and no more.

- The base model: a hub id (with the commit it was loaded at) or a local folder (named, never as an absolute
  path), and its licence as its own card states it (`README.md` front matter, on the hub or in the folder).
- The licence the card may give: the base model's, unless the data restricts it; unknown is `other`, said
  in words. Never a guess.
- Paths: the run record and the manifest keep local paths relative to the output folder, so nothing pushed
  names the user's home folder; `resolve_recorded` turns them back into paths (the audit repeats a run).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

# Licences under which a model trained on the data may not be used commercially.
NON_COMMERCIAL = ("cc-by-nc", "cc-by-nc-sa", "cc-by-nc-nd", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0",
                  "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0")


def card_license(readme: str | os.PathLike | None) -> str | None:
    """The `license:` of a model or dataset card file (its YAML front matter), or None."""
    if readme is None or not Path(readme).is_file():
        return None
    from huggingface_hub import ModelCard

    try:
        license_ = ModelCard.load(str(readme)).data.license
    except Exception as error:  # noqa: BLE001 - an unreadable card means an unknown licence, said so
        logger.warning("%s: card not readable (%s): licence unknown", readme, str(error).splitlines()[0])
        return None
    return str(license_).strip().lower() if license_ else None


def hub_card_license(repo_id: str, revision: str | None, repo_type: str = "model",
                     cache_dir: str | None = None) -> tuple[str | None, str]:
    """The licence on a hub repo's card at `revision`, and where it was read (or why it could not be)."""
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(repo_id, "README.md", repo_type=repo_type, revision=revision, cache_dir=cache_dir)
    except Exception as error:  # noqa: BLE001 - no card (or none reachable) is an unknown licence
        return None, f"{repo_id}'s card could not be read ({type(error).__name__})"
    found = card_license(path)
    return found, f"{repo_id}'s card" if found else f"{repo_id}'s card names no licence"


def base_model_record(name_or_path: str, hub_id: str, config, output_dir: str | os.PathLike,
                      revision: str | None = None, cache_dir: str | None = None) -> dict:
    """The base model as the card may describe it: source, identity, commit and licence."""
    local = Path(name_or_path)
    if local.is_dir():
        license_ = card_license(local / "README.md")
        return {"source": "local", "name": local.resolve().name,
                "path": relative_to(local, output_dir), "license": license_,
                "license_source": "README.md in the model folder" if license_ else
                "the model folder's README.md names no licence" if (local / "README.md").is_file()
                else "the model folder has no README.md"}
    commit = getattr(config, "_commit_hash", None) or revision
    license_, where = hub_card_license(hub_id, commit, cache_dir=cache_dir)
    return {"source": "hub", "id": hub_id, "requested": name_or_path, "revision": commit, "license": license_,
            "license_source": where}


UNSTATED = (None, "", "other", "unknown")


def card_licence(base_model: dict, data_licenses: dict[str, str | None],
                 extra_licenses: dict[str, str | None] | None = None) -> tuple[str, str]:
    """(licence for the card's metadata, one sentence saying where it comes from). `extra_licenses`: the extra
    training sources', whose terms the model carries too; one that states none makes the model's licence
    unknown rather than the base model's."""
    extra = dict(extra_licenses or {})
    restricted = {name: lic for name, lic in {**data_licenses, **extra}.items() if lic and lic in NON_COMMERCIAL}
    unstated = [name for name, lic in extra.items() if lic in UNSTATED]
    model_licence = base_model.get("license")
    if restricted:
        names = ", ".join(f"{name} ({lic})" for name, lic in restricted.items())
        also = (f" The licence of {', '.join(unstated)} is not stated on its card; check its terms too."
                if unstated else "")
        return "other", (f"The training data restricts use: {names} allow non-commercial use only, so this model "
                         f"is for non-commercial use; the base model's licence is "
                         f"{model_licence or 'unknown'}.{also}")
    if unstated:
        return "other", (f"The licence is unknown: the training data includes {', '.join(unstated)}, whose card "
                         f"states no licence; check its terms before use (the base model's licence is "
                         f"{model_licence or 'unknown'}).")
    if model_licence:
        return model_licence, f"The licence is the base model's, from {base_model.get('license_source')}."
    return "other", (f"The licence is unknown: {base_model.get('license_source') or 'the base model is not recorded'}"
                     "; check the base model's terms before use.")


def public_name(name_or_path: str) -> str:
    """A model as a pushed report may name it: a hub id as it is, a local folder by its own name only."""
    path = Path(name_or_path)
    return path.resolve().name if path.exists() or path.is_absolute() else name_or_path


def relative_to(path: str | os.PathLike, output_dir: str | os.PathLike) -> str:
    """`path` relative to the output folder (POSIX form)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(output_dir).resolve())).as_posix()


def map_paths(value, change):
    """`change` applied to the path in an argument's value: a path, or a list of `--extra_data` sources whose
    path comes before their `?settings`."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        out = []
        for item in value:
            path, mark, settings = str(item).partition("?")
            out.append(change(path) + mark + settings)
        return out
    return value


def relative_paths(arguments: dict, names, output_dir: str | os.PathLike) -> tuple[dict, list[str]]:
    """The recorded arguments with every local path among `names` relative to the output folder (the output
    folder itself is left out: it is where the record lies), and the names rewritten."""
    recorded, rewritten = {}, []
    for name, value in arguments.items():
        if name == "output_dir":
            continue
        if name in names:
            changed = map_paths(value, lambda p: relative_to(p, output_dir) if os.path.isabs(p) else p)
            if changed != value:
                value = changed
                rewritten.append(name)
        recorded[name] = value
    return recorded, rewritten


def resolve_recorded(arguments: dict, rewritten, output_dir: str | os.PathLike) -> dict:
    """The inverse of `relative_paths`: recorded relative paths as paths again (absolute ones stay). In a list
    of sources only what exists next to the output folder is a path (the rest are hub ids)."""
    def resolve(value):
        if isinstance(value, str):
            return str((Path(output_dir) / value).resolve())
        return map_paths(value, lambda p: str((Path(output_dir) / p).resolve()) if not os.path.isabs(p)
                         and (Path(output_dir) / p).exists() else p)
    return {name: (resolve(value) if name in rewritten else value) for name, value in arguments.items()}

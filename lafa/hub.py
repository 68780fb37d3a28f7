"""Models by Hugging Face Hub repo id: resolved through huggingface_hub's cache, and pushed with it.

`resolve(name)` turns what a user gives as a model (`--ckpt_path`, `vae_ckpt`, `autoencoder_ckpt`,
`from_pretrained`) into a local file or folder: an existing path as it is, else a repo id (`org/name`, optionally
`org/name@revision`) fetched file by file into huggingface_hub's cache (`HF_HUB_OFFLINE=1` reads only the cache).
Two layouts are known: a lafa bundle and Stable Audio Open (`model_config.json` + `model.safetensors`), whose
autoencoder is read as an Oobleck VAE (`sao_vae_arguments`). docs/bundles.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lafa.errors import LafaUserError

SAO_CONFIG = "model_config.json"  # stable-audio-tools' model config, beside model.safetensors
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}(@[\w./-]+)?$")
_FILE_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth", ".bin", ".json", ".yaml", ".tar")


def looks_like_repo_id(name: str) -> bool:
    """`org/name` or `org/name@revision` that is not a file name (`vae/last.ckpt` is a path)."""
    return bool(_REPO_ID.match(name)) and not name.split("@")[0].endswith(_FILE_SUFFIXES)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_file(repo_id: str, filename: str, revision: str | None) -> Path | None:
    """The cached (else downloaded) file of a repo, or None where the repo has no such file (or, offline, the cache
    does not hold it)."""
    from huggingface_hub import _CACHED_NO_EXIST, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    cached = try_to_load_from_cache(repo_id, filename, revision=revision)
    if isinstance(cached, str):
        return Path(cached)
    if cached is _CACHED_NO_EXIST or _offline():
        return None
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None
    except Exception as e:  # no network, no such repo, gated repo without a token: one line
        raise LafaUserError(f"{repo_id}: cannot fetch {filename} from the Hugging Face Hub ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); check the repo id and your access "
                            f"(`hf auth login` for a gated repo), or give a local path") from e


def fetch(repo_id: str) -> Path:
    """The snapshot folder of a Hub model holding a lafa bundle or Stable Audio Open's files."""
    repo, _, revision = repo_id.partition("@")
    revision = revision or None
    config = _hub_file(repo, "config.json", revision)
    if config is not None and json.loads(config.read_text()).get("format") == "lafa-bundle":
        needed = ("model.safetensors", "README.md")
    else:
        config = _hub_file(repo, SAO_CONFIG, revision)
        needed = ("model.safetensors",)
    if config is None:
        where = "in the huggingface_hub cache (HF_HUB_OFFLINE=1)" if _offline() else "on the Hub"
        raise LafaUserError(f"{repo_id}: not a file or folder here, and no lafa bundle (config.json) or Stable Audio "
                            f"Open model ({SAO_CONFIG}) of that repo id {where}; give a checkpoint, a bundle folder, "
                            f"or a repo id you have downloaded (`hf download {repo}` on a machine that is online)")
    for name in needed:
        if _hub_file(repo, name, revision) is None and name != "README.md":
            raise LafaUserError(f"{repo_id}: {config.name} is cached but {name} is not; download the whole repo "
                                f"(`hf download {repo}`) and try again")
    return config.parent


def resolve(name: str | Path) -> Path:
    """A local path as given; a Hub repo id -> its snapshot folder (see the module docstring)."""
    path = Path(name)
    if path.exists() or not looks_like_repo_id(str(name)):
        return path
    return fetch(str(name))


def is_sao_folder(folder: Path) -> bool:
    return folder.is_dir() and (folder / SAO_CONFIG).is_file() and (folder / "model.safetensors").is_file()


def sao_vae_arguments(folder: Path) -> dict:
    """OobleckVAE arguments from a Stable Audio Open `model_config.json` (its `model.pretransform` autoencoder)."""
    config = json.loads((folder / SAO_CONFIG).read_text())
    try:
        auto = config["model"]["pretransform"]["config"]
        encoder, decoder = auto["encoder"]["config"], auto["decoder"]["config"]
        if auto["encoder"]["type"] != "oobleck" or auto["decoder"]["type"] != "oobleck":
            raise KeyError("an oobleck encoder and decoder")
        return dict(in_channels=encoder["in_channels"], channels=encoder["channels"], c_mults=tuple(encoder["c_mults"]),
                    strides=tuple(encoder["strides"]), latent_dim=decoder["latent_dim"],
                    sample_rate=int(config.get("sample_rate", 44100)), use_snake=bool(encoder.get("use_snake", True)),
                    final_tanh=bool(decoder.get("final_tanh", False)))
    except (KeyError, TypeError) as e:
        raise LafaUserError(f"{folder / SAO_CONFIG}: not a Stable Audio model config with an Oobleck autoencoder "
                            f"(missing {e}); give Stable Audio Open's own model_config.json") from e


def push(folder: str | Path, repo_id: str, private: bool = False, commit_message: str | None = None,
         token: str | None = None) -> str:
    """Upload a bundle folder to the Hub (creating the model repo if needed); returns the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                             commit_message=commit_message or f"lafa bundle {Path(folder).name}")
    return str(getattr(info, "commit_url", info))

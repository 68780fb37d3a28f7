"""Safe loading of Stable Audio Open VAE weights (official files or `lafa export` output) into `OobleckVAE`.

Accepted files, read without unpickling code (safetensors, or torch.load(weights_only=True)):
- Stable Audio Open's `model.safetensors` / `model.ckpt`: the VAE keys live under `pretransform.model.`,
  beside the DiT and conditioner keys, which are ignored;
- an unwrapped VAE checkpoint (`encoder.layers.N...`, `decoder.layers.N...`), e.g. what `lafa export` writes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lafa.models.oobleck import OobleckVAE

SAO_VAE_PREFIX = "pretransform.model."
_SHOWN = 12  # how many names of each kind an error lists


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file, or the (`state_dict` of a) torch file, loaded safely on CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = list(f.keys())
            # the full SAO model is ~5 GB: read the VAE tensors alone when it holds them
            if any(k.startswith(SAO_VAE_PREFIX) for k in keys):
                keys = [k for k in keys if k.startswith(SAO_VAE_PREFIX)]
            return {k: f.get_tensor(k) for k in keys}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # an unsafe pickle (or not a torch file): refuse rather than execute it
        raise ValueError(f"{path} cannot be loaded safely (safetensors or torch weights_only): {e}") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a flat dict of tensors (or a checkpoint with a 'state_dict')")
    return obj


def unwrap_vae_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the VAE's tensors under their unwrapped names: strip `pretransform.model.` when present."""
    if any(k.startswith(SAO_VAE_PREFIX) for k in state_dict):
        return {k[len(SAO_VAE_PREFIX):]: v for k, v in state_dict.items() if k.startswith(SAO_VAE_PREFIX)}
    return dict(state_dict)


def checkpoint_latent_dim(state_dict: dict[str, torch.Tensor]) -> int | None:
    """The latent size an unwrapped VAE state dict was trained with (decoder input channels), if readable."""
    weight = state_dict.get("decoder.layers.0.weight_v")
    return int(weight.shape[1]) if weight is not None and weight.ndim == 3 else None


def infer_vae_kwargs(state_dict: dict[str, torch.Tensor]) -> dict:
    """OobleckVAE arguments readable from an unwrapped VAE state dict's shapes: in_channels, channels, c_mults,
    strides (downsampling conv kernel = 2 x stride), use_snake. Empty if the layout is not recognised."""
    first = state_dict.get("encoder.layers.0.weight_v")
    if first is None or first.ndim != 3:
        return {}
    channels, in_channels = int(first.shape[0]), int(first.shape[1])
    widths, strides, i = [], [], 1
    while (down := state_dict.get(f"encoder.layers.{i}.layers.4.weight_v")) is not None and down.ndim == 3:
        widths.append(int(down.shape[0]))
        strides.append(int(down.shape[-1]) // 2)
        i += 1
    if not widths or any(w % channels for w in widths):
        return {}
    return {"in_channels": in_channels, "channels": channels, "c_mults": tuple(w // channels for w in widths),
            "strides": tuple(strides), "use_snake": "encoder.layers.1.layers.3.alpha" in state_dict}


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def load_vae_state_dict(model: OobleckVAE, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strictly load an unwrapped VAE state dict; on any mismatch raise one error naming the missing,
    unexpected and wrongly shaped keys (and the latent size when that is the cause)."""
    found = checkpoint_latent_dim(state_dict)
    if found is not None and found != model.latent_dim:
        raise ValueError(
            f"{source} holds a VAE with latent size {found} but the config asks for latent_dim={model.latent_dim}; "
            f"set latent_dim: {found} (or use a checkpoint trained with {model.latent_dim} latent channels)"
        )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(
        f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    )
    if missing or unexpected or wrong:
        parts = [f"{source} does not match OobleckVAE"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_names(unexpected)}")
        if wrong:
            parts.append(f"wrongly shaped keys ({len(wrong)}): {_names(wrong)}")
        raise ValueError("\n  ".join(parts))
    model.load_state_dict(state_dict, strict=True)


def load_sao_vae(path: str | Path, latent_dim: int = 64, **model_kwargs) -> OobleckVAE:
    """An `OobleckVAE(latent_dim=..., **model_kwargs)` holding the weights of `path` (see the module docstring).

    Architecture arguments not given (channels, c_mults, strides, in_channels, use_snake) are read from the
    file's shapes, so a VAE of any width exported by `lafa export` loads by path alone; the latent size is never
    guessed: a file whose latent size differs from `latent_dim` is an error that says so.
    """
    state_dict = unwrap_vae_state_dict(read_state_dict(path))
    model = OobleckVAE(latent_dim=latent_dim, **{**infer_vae_kwargs(state_dict), **model_kwargs})
    load_vae_state_dict(model, state_dict, source=str(path))
    return model


def save_vae_safetensors(model_or_state: OobleckVAE | dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write a VAE's weights in the official unwrapped layout (`encoder.layers.N...`) as safetensors."""
    from safetensors.torch import save_file

    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))
    return path

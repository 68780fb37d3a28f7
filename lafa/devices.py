"""The one device rule of lafa's own subcommands (evaluate, generate, ...): `auto` is cuda when available, else cpu.

Commands print the device they resolved once (`device: cpu`); library functions take the same names.
"""

from __future__ import annotations

import torch

from lafa.errors import BadInput

DEVICE_HELP = "auto (cuda when available, else cpu), cpu, cuda or cuda:N"


def resolve_device(name: str | torch.device | None = "auto", option: str = "--device") -> torch.device:
    """`auto`/None -> cuda if available else cpu; cpu, cuda, cuda:N are checked against this machine."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise BadInput(f"{option} {name}", f"not a device ({e})", f"use {DEVICE_HELP}") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInput(f"{option} {name}", "CUDA is not available on this machine",
                           "use --device auto or --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BadInput(f"{option} {name}", f"this machine has {torch.cuda.device_count()} CUDA device(s)",
                           "use --device auto or a smaller index")
    elif device.type != "cpu":
        raise BadInput(f"{option} {name}", f"device type {device.type!r} is not supported", f"use {DEVICE_HELP}")
    return device

"""Two things every model component shares: picking a named preset, and building on a device.

``pick`` looks a name up in a preset table and, when it is unknown, names the closest one.
``build_on`` constructs a module on the meta device, casts it, and (unless the target is ``meta``)
materialises it empty on the target device and initialises it in place, so a large model never
passes through a float32 CPU copy. Imports torch only.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TypeVar

import torch
from torch import nn

ConfigT = TypeVar("ConfigT")
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def pick(presets: Mapping[str, ConfigT], name: str, kind: str, /, **overrides) -> ConfigT:
    """``presets[name]`` with fields replaced by ``overrides``.

    Raises:
        ValueError: unknown name, naming the closest preset and listing the known ones.
    """
    if name not in presets:
        close = difflib.get_close_matches(name, list(presets), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {kind} {name!r}{hint} (known: {', '.join(presets)})")
    return replace(presets[name], **overrides) if overrides else presets[name]


def build_on(construct: Callable[[], ModuleT], device: torch.device | str | None,
             dtype: torch.dtype | None) -> ModuleT:
    """Build ``construct()`` on ``device`` in ``dtype``; the module must offer ``init_weights()``."""
    with torch.device("meta"):
        module = construct()
    if dtype is not None:
        module = module.to(dtype)
    if str(device) == "meta":
        return module
    module = module.to_empty(device=device or "cpu")
    module.init_weights()
    return module

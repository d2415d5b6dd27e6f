"""Model placement with one owner: a stage moves the models it uses to its device and returns them.

Training keeps only the UNet on the accelerator (Lightning moves it); the VAE and the CLIP image
encoder live on the CPU and visit the accelerator only for the stage that needs them (encoding the
training tensors, conditioning and decoding at sampling). Every stage does this through
:func:`placed`, so whatever ran before, a stage finds its models where it runs and leaves them where
they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.nn as nn

__all__ = ["module_device", "placed"]


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (CPU for a module without parameters)."""
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextlib.contextmanager
def placed(modules: Iterable[nn.Module], device: torch.device | str) -> Iterator[torch.device]:
    """Move ``modules`` to ``device`` inside the block; on exit each goes back to where it was.

    Args:
        modules: the models a stage uses.
        device: the stage's device.

    Yields:
        ``device`` as a :class:`torch.device`.
    """
    device = torch.device(device)
    modules = list(modules)
    homes = [module_device(m) for m in modules]
    try:
        for module in modules:
            module.to(device)
        yield device
    finally:
        for module, home in zip(modules, homes, strict=True):
            module.to(home)

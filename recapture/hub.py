"""Find model weights before any heavy work: a local directory, the Hugging Face cache, or a download.

Every model a run needs (the SVD parts, a ``transformers`` depth model) is resolved to a local
directory first, so a missing model stops the run at once with one line that names it and says how
to get it, instead of failing after minutes of anchor rendering (or hub retries). Loaders then read
the resolved directory, which makes no further hub calls.

Resolution order for ``source``:

1. an existing directory: used as is (its required files are checked);
2. a hub id already in the local Hugging Face cache (``HF_HOME``): the cached snapshot;
3. a hub id not cached: downloaded now (only the files matching ``allow_patterns``), unless
   ``HF_HUB_OFFLINE`` is set; a failed download (no network, gated model without a token, unknown
   id) is a :class:`~recapture.utils.RecaptureError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from recapture.utils import RecaptureError

log = logging.getLogger(__name__)

__all__ = ["SHIPPED_MODELS", "hub_offline", "looks_like_hub_id", "resolve_model", "shipped_model", "weights_fingerprint"]

# models that ship inside the package (name -> folder under recapture/assets), loadable by name
SHIPPED_MODELS: dict[str, str] = {"recapture-tiny": "recapture-tiny"}
ASSETS = Path(__file__).parent / "assets"
_SHIPPED_CHECKED = ("unet/", "vae/", "image_encoder/", "scheduler/", "feature_extractor/", "model_index.json")


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".json")
_HEX = frozenset("0123456789abcdef")


def _blob_digest(path: Path) -> str | None:
    """The sha256 a Hugging Face cache already names a file by (its blob's name), or None.

    Snapshot files are symlinks to ``blobs/<sha256>`` for LFS files (weights); small git files are
    named by a 40-hex git hash instead, which identifies them as well.
    """
    if not path.is_symlink():
        return None
    target = path.resolve()
    name = target.name
    if target.parent.name == "blobs" and len(name) in (40, 64) and set(name) <= _HEX:
        return name
    return None


def weights_fingerprint(folder: Path) -> str:
    """A short hash of the weights and configs in a model folder: different weights, different hash.

    Used where results are reused by settings (``recapture benchmark``'s scene JSONs): swapping a
    prior's weights under the same name or path must not reuse scenes scored with the old ones.
    Files in the Hugging Face cache are identified by their blob names (no reading); other files
    by their bytes (full-size SVD in fp16: ~4 GB, a few seconds to read).

    Args:
        folder: a resolved model directory (``save_pretrained`` layout).

    Returns:
        16 hex characters.
    """
    from recapture.checksums import sha256_file
    from recapture.utils import hash_inputs

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    if not files:
        raise RecaptureError(f"{folder} holds no weights or config files to fingerprint")
    table = {p.relative_to(folder).as_posix(): _blob_digest(p) or sha256_file(p) for p in files}
    return hash_inputs(table)


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids network access to the hub."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in {"1", "true", "yes", "on"}


def looks_like_hub_id(source: str) -> bool:
    """``owner/name`` with no path syntax (``./``, ``/``, ``~``, backslashes, more slashes)."""
    return not source.startswith(("/", ".", "~")) and source.count("/") == 1 and "\\" not in source


def shipped_model(name: str) -> Path | None:
    """The folder of a model shipped with the package (``recapture-tiny``), checksums verified; None otherwise.

    Raises:
        RecaptureError: the name is a shipped model but its files are missing or differ from its
            ``checksums.json`` (a broken install or an edited file).
    """
    if name not in SHIPPED_MODELS:
        return None
    from recapture.checksums import verify_checksums

    folder = ASSETS / SHIPPED_MODELS[name]
    if not (folder / "checksums.json").is_file():
        raise RecaptureError(
            f"the shipped model {name!r} is not installed ({folder} has no checksums.json): reinstall recapture "
            "(pip install -e .) from a complete checkout"
        )
    bad = verify_checksums(folder, only=_SHIPPED_CHECKED)
    if bad:
        raise RecaptureError(
            f"the shipped model {name!r} in {folder} does not match its checksums.json ({', '.join(bad[:4])}): "
            "restore the files (git checkout recapture/assets) or reinstall recapture"
        )
    return folder


def _check_required(path: Path, required: Sequence[str], what: str, source: str) -> None:
    missing = [r for r in required if not any(path.glob(r))]
    if missing:
        raise RecaptureError(
            f"{what} {source!r} ({path}) is missing {', '.join(missing)}: pass a complete directory in "
            "save_pretrained layout or a hub id"
        )


def resolve_model(
    source: str,
    what: str,
    allow_patterns: Sequence[str] | None = None,
    required: Sequence[str] = (),
    fix: str = "",
) -> Path:
    """Resolve ``source`` (local directory or hub id) to a local directory holding the model.

    Args:
        source: a directory or a hub id (``owner/name``).
        what: the model's role for messages (``"SVD weights"``, ``"depth model"``).
        allow_patterns: hub files to fetch (e.g. only the fp16 variant); None fetches everything.
        required: glob patterns (relative to the directory) that must match at least one file.
        fix: extra advice appended to the error (e.g. ``"or use --data.depth PriorDepthSource"``).

    Returns:
        the local directory.

    Raises:
        RecaptureError: the directory does not exist, lacks required files, or the hub id is neither
            cached nor downloadable.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        _check_required(path, required, what, source)
        return path
    advice = f"; {fix}" if fix else ""
    if path.exists() or not looks_like_hub_id(source):
        raise RecaptureError(
            f"{what} directory {source!r} does not exist (or is not a directory); pass a directory in "
            f"save_pretrained layout or a hub id (owner/name){advice}"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = list(allow_patterns) if allow_patterns is not None else None
    try:
        local = Path(snapshot_download(source, allow_patterns=patterns, local_files_only=True))
        _check_required(local, required, what, source)
        return local
    except (LocalEntryNotFoundError, RecaptureError, OSError):
        pass  # not (completely) in the cache
    get_it = (
        f"download it with `huggingface-cli download {source}` (after `huggingface-cli login` and accepting "
        f"its licence on huggingface.co if it is gated) or pass a local directory{advice}"
    )
    if hub_offline():
        raise RecaptureError(f"{what} {source!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: {get_it}")
    log.info("%s %s: not in the local cache, downloading", what, source)
    try:
        local = Path(snapshot_download(source, allow_patterns=patterns))
    except GatedRepoError as err:
        raise RecaptureError(
            f"{what} {source!r} is gated: accept its licence on huggingface.co, run `huggingface-cli login`, "
            f"then retry (or pass a local directory{advice})"
        ) from err
    except RepositoryNotFoundError as err:
        raise RecaptureError(f"{what} {source!r} does not exist on the hub (or needs a login): check the id{advice}") from err
    except Exception as err:  # network errors come in many types (httpx, OSError, hub errors)
        raise RecaptureError(
            f"{what} {source!r} could not be downloaded ({type(err).__name__}): {get_it}"
        ) from err
    _check_required(local, required, what, source)
    return local

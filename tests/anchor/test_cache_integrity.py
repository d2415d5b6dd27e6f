"""Caches are not trusted blindly: checksummed entries, bad ones reported/removed/recomputed, a size cap
with LRU eviction, and cleanup of temporaries left by killed writes (issue 11, items 4 and 5)."""

from __future__ import annotations

import logging
import os
import pickle
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from recapture import caching
from recapture.adaptation.encoding import TrainingTensors
from recapture.anchor import AnchorConfig, build_anchor
from recapture.anchor import cache as anchor_cache
from recapture.cameras import make_trajectory
from recapture.depth import TensorDepth
from recapture.utils import clean_partials

T, H, W = 4, 64, 96


class CountingDepth(TensorDepth):
    def __init__(self, depth: torch.Tensor) -> None:
        super().__init__(depth, name="exact:test")
        self.calls = 0

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().__call__(frames)


@pytest.fixture
def scene() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    frames = torch.rand(T, 3, H, W, generator=g)
    depth = 3.0 + torch.rand(T, 1, H, W, generator=g)
    return frames, depth


def _flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _tensor_offset(path: Path, needle: bytes) -> int:
    """Offset of a byte run only a tensor payload holds (so the flip changes content, not zip padding)."""
    at = path.read_bytes().find(needle)
    assert at >= 0
    return at + len(needle) // 2


def _bad_entry_warnings(caplog, path: Path) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(path) in r.getMessage()]


def _assert_same_anchor(a, b) -> None:
    assert torch.equal(a.anchor.frames, b.anchor.frames) and torch.equal(a.anchor.mask, b.anchor.mask)
    assert torch.equal(a.depth, b.depth) and torch.equal(a.c2w, b.c2w) and torch.equal(a.K, b.K)
    assert a.report["coverage"] == b.report["coverage"]


# ---------------------------------------------------------------------------------------- anchors
class _CodePayload:
    """Unpickling this runs code (here: creates ``marker``), as a crafted cache entry would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("damage", ["bitflip", "truncate", "edit", "foreign_pickle", "code_pickle", "no_checksum",
                                    "empty"])
def test_bad_anchor_entry_is_reported_removed_and_recomputed(scene, tmp_path: Path, caplog, damage) -> None:
    frames, depth = scene
    traj = make_trajectory("truck", 0.1, T)
    cfg = AnchorConfig(cache_dir=str(tmp_path / "anchors"), progress=False)
    fresh = build_anchor(frames, 24.0, CountingDepth(depth), traj, AnchorConfig(cache_dir=None, progress=False))
    first = build_anchor(frames, 24.0, CountingDepth(depth), traj, cfg)
    entry = tmp_path / "anchors" / f"{first.report['cache_key']}.pt"
    assert entry.is_file() and first.report["cache"] == "miss"

    if damage == "bitflip":  # one bit of the depth tensor's bytes
        _flip_byte(entry, _tensor_offset(entry, first.depth[0, 0, 10].numpy().tobytes()))
    elif damage == "truncate":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif damage == "edit":  # a well-formed entry whose mask was changed by another tool
        raw = torch.load(entry, weights_only=True)
        raw["anchor_mask"] = torch.ones_like(raw["anchor_mask"])
        torch.save(raw, entry)
    elif damage == "foreign_pickle":
        entry.write_bytes(pickle.dumps({"anchor_frames": "not a tensor", "hello": [1, 2, 3]}, protocol=2))
    elif damage == "code_pickle":
        torch.save({"anchor_frames": _CodePayload(tmp_path / "pwned")}, entry)
    elif damage == "no_checksum":  # an entry of the format before checksums
        raw = torch.load(entry, weights_only=True)
        raw.pop("sha256")
        torch.save(raw, entry)
    else:
        entry.write_bytes(b"")

    est = CountingDepth(depth)
    with caplog.at_level(logging.WARNING):
        again = build_anchor(frames, 24.0, est, traj, cfg)
    warnings = _bad_entry_warnings(caplog, entry)
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "anchor cache entry" in warnings[0] and "\n" not in warnings[0]
    assert again.report["cache"] == "miss" and est.calls == 1  # recomputed, not used
    assert not (tmp_path / "pwned").exists()  # a crafted entry is refused without running its code
    _assert_same_anchor(again, fresh)
    # the recomputed entry replaced the bad one: the next run is a quiet hit
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third = build_anchor(frames, 24.0, est, traj, cfg)
    assert third.report["cache"] == "hit" and est.calls == 1 and not _bad_entry_warnings(caplog, entry)
    _assert_same_anchor(third, fresh)


def test_unreadable_anchor_entry_is_recomputed_not_an_error(scene, tmp_path: Path, caplog, monkeypatch) -> None:
    frames, depth = scene
    traj = make_trajectory("pan", 2.0, T)
    cfg = AnchorConfig(cache_dir=str(tmp_path / "anchors"), progress=False)
    first = build_anchor(frames, 24.0, TensorDepth(depth), traj, cfg)
    entry = tmp_path / "anchors" / f"{first.report['cache_key']}.pt"
    real_load = torch.load

    def denied(f, *args, **kwargs):  # as reading a mode-000 file as a non-root user
        raise PermissionError(13, "Permission denied", str(f))

    if os.geteuid() != 0:
        entry.chmod(0)
    else:
        monkeypatch.setattr(anchor_cache.torch, "load", denied)
    with caplog.at_level(logging.WARNING):
        again = build_anchor(frames, 24.0, TensorDepth(depth), traj, cfg)
    assert again.report["cache"] == "miss" and len(_bad_entry_warnings(caplog, entry)) == 1
    monkeypatch.setattr(anchor_cache.torch, "load", real_load)
    assert build_anchor(frames, 24.0, TensorDepth(depth), traj, cfg).report["cache"] == "hit"


# ---------------------------------------------------------------------------------------- latents
def _tensors(seed: int, size: int = 8) -> TrainingTensors:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return TrainingTensors(
        anchor_latents=r(2, 4, size, size), anchor_mask=(r(2, 1, size, size) > 0).float(),
        anchor_cond_latents=r(1, 4, size, size), anchor_image_embeds=r(1, 1, 6),
        source_pool=r(2, 2, 4, size, size), source_cond_latents=r(1, 2, 4, size, size),
        source_image_embeds=r(2, 1, 6), meta={"latent_factor": 8, "seed": seed},
    )


def _same(a: TrainingTensors, b: TrainingTensors) -> bool:
    return a.meta == b.meta and all(torch.equal(x, b.tensors()[k]) for k, x in a.tensors().items())


@pytest.fixture
def datamodule(scene, tmp_path: Path, monkeypatch):
    """The real ReCaptureDataModule.setup('fit') with a stand-in trainer and a counting encoder."""
    import recapture.adaptation.encoding as encoding_module
    import recapture.training.datamodule as dm_module
    from recapture.adaptation.encoding import TrainingEncoder
    from recapture.adaptation.objective import EDMConfig

    calls = []

    def fake_encode(source, anchor, anchor_mask, components, device, augment, objective, seed, progress=True):
        calls.append(seed)
        return _tensors(seed)

    monkeypatch.setattr(encoding_module, "encode_training_tensors", fake_encode)
    frames, depth = scene
    module = SimpleNamespace(training_encoder=lambda: TrainingEncoder(None, "fake", EDMConfig()))
    trainer = SimpleNamespace(is_global_zero=True, lightning_module=module, default_root_dir=str(tmp_path / "run"),
                              strategy=SimpleNamespace(root_device=torch.device("cpu")))

    def make():
        dm = dm_module.ReCaptureDataModule(
            anchor=AnchorConfig(cache_dir=str(tmp_path / "anchors"), progress=False),
            latent_cache_dir=str(tmp_path / "latents"), output_dir=str(tmp_path / "run"), seed=5,
        )
        dm.use_sample(frames, 24.0, depth=depth, trajectory=make_trajectory("truck", 0.1, T))
        dm.trainer = trainer
        dm.setup("fit")
        return dm

    return make, calls


@pytest.mark.parametrize("damage", ["bitflip", "truncate", "pickle", "no_checksum", "edit_meta"])
def test_bad_latent_entry_is_reported_removed_and_recomputed(datamodule, tmp_path: Path, caplog, damage) -> None:
    make, calls = datamodule
    first = make()
    assert first.timings["latent_cache"] == "miss" and len(calls) == 1
    (entry,) = (tmp_path / "latents").glob("*.safetensors")
    fresh = _tensors(5)
    assert _same(first.tensors, fresh)

    if damage == "bitflip":
        _flip_byte(entry, _tensor_offset(entry, fresh.source_pool[1, 1, 2].numpy().tobytes()))
    elif damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:-100])
    elif damage == "pickle":  # the old, code-executing format: refused, never unpickled
        torch.save(fresh.tensors(), entry)
    elif damage == "no_checksum":
        from safetensors.torch import save_file

        save_file(fresh.tensors(), str(entry), metadata={"meta": "{}"})
    else:  # the header's metadata changed (same length, so the file stays well formed)
        data = entry.read_bytes()
        assert data.count(b'\\"seed\\": 5') == 1
        entry.write_bytes(data.replace(b'\\"seed\\": 5', b'\\"seed\\": 6'))

    with caplog.at_level(logging.WARNING):
        again = make()
    warnings = _bad_entry_warnings(caplog, entry)
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "latent cache entry" in warnings[0] and "\n" not in warnings[0]
    assert again.timings["latent_cache"] == "miss" and len(calls) == 2  # re-encoded
    assert _same(again.tensors, fresh)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third = make()
    assert third.timings["latent_cache"] == "hit" and len(calls) == 2 and not _bad_entry_warnings(caplog, entry)
    assert _same(third.tensors, fresh)


def test_training_tensors_load_checks_the_checksum(tmp_path: Path) -> None:
    from recapture.utils import RecaptureError

    path = _tensors(1).save(tmp_path / "t.safetensors")
    assert _same(TrainingTensors.load(path), _tensors(1))
    _flip_byte(path, _tensor_offset(path, _tensors(1).anchor_latents[1, 2, 3].numpy().tobytes()))
    with pytest.raises(RecaptureError, match="checksum"):
        TrainingTensors.load(path)


# ------------------------------------------------------------------------------ cap and eviction
def _write(path: Path, size: int, age_s: float) -> Path:
    path.write_bytes(b"x" * size)
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def test_cap_evicts_least_recently_used(tmp_path: Path) -> None:
    old = _write(tmp_path / "old.pt", 400, 300)
    mid = _write(tmp_path / "mid.pt", 400, 200)
    new = _write(tmp_path / "new.pt", 400, 100)
    other = _write(tmp_path / "notes.txt", 10_000, 500)  # not an entry: never counted or removed
    caching.mark_used(old)  # a hit makes the oldest the most recent
    removed = caching.enforce_cap(tmp_path, ".pt", max_bytes=900, keep=(new,))
    assert removed == [mid]
    assert old.is_file() and new.is_file() and other.is_file()
    # the entry just written is kept even when it alone exceeds the cap
    assert caching.enforce_cap(tmp_path, ".pt", max_bytes=100, keep=(new,)) == [old]
    assert new.is_file()


def test_cap_from_environment(monkeypatch) -> None:
    from recapture.utils import RecaptureError

    monkeypatch.delenv(caching.MAX_GB_ENV, raising=False)
    assert caching.max_cache_bytes() == 5_000_000_000
    monkeypatch.setenv(caching.MAX_GB_ENV, "0.5")
    assert caching.max_cache_bytes() == 500_000_000
    monkeypatch.setenv(caching.MAX_GB_ENV, "none")
    assert caching.max_cache_bytes() is None
    assert caching.max_cache_bytes(2) == 2_000_000_000  # an explicit value wins
    monkeypatch.setenv(caching.MAX_GB_ENV, "lots")
    with pytest.raises(RecaptureError, match=caching.MAX_GB_ENV):
        caching.max_cache_bytes()


def test_anchor_cache_stays_under_the_cap(scene, tmp_path: Path, monkeypatch) -> None:
    frames, depth = scene
    cfg = AnchorConfig(cache_dir=str(tmp_path / "anchors"), min_coverage=0.0, progress=False)
    keys = []
    for i, amount in enumerate((0.1, 0.2, 0.3)):
        res = build_anchor(frames, 24.0, TensorDepth(depth), make_trajectory("truck", amount, T), cfg)
        keys.append(res.report["cache_key"])
        entry = tmp_path / "anchors" / f"{keys[-1]}.pt"
        t = time.time() - 100 + i  # distinct, increasing last-use times
        os.utime(entry, (t, t))
    size = max(p.stat().st_size for p in (tmp_path / "anchors").glob("*.pt"))
    # a hit on the first entry makes the second the least recently used
    assert build_anchor(frames, 24.0, TensorDepth(depth), make_trajectory("truck", 0.1, T), cfg).report["cache"] == "hit"
    monkeypatch.setenv(caching.MAX_GB_ENV, str(2.5 * size / 1e9))
    build_anchor(frames, 24.0, TensorDepth(depth), make_trajectory("truck", 0.4, T), cfg)
    names = {p.stem for p in (tmp_path / "anchors").glob("*.pt")}
    assert len(names) == 2 and keys[0] in names and keys[1] not in names and keys[2] not in names


def test_latent_cache_stays_under_the_cap(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "latents"
    first = _tensors(0).save_cached(folder / "a.safetensors")
    size = first.stat().st_size
    monkeypatch.setenv(caching.MAX_GB_ENV, str(1.5 * size / 1e9))
    t = time.time() - 100
    os.utime(first, (t, t))
    _tensors(1).save_cached(folder / "b.safetensors")
    assert sorted(p.name for p in folder.iterdir()) == ["b.safetensors"]


# ------------------------------------------------------------------------ temporaries of killed writes
def test_clean_partials_removes_only_stale_temporaries(tmp_path: Path) -> None:
    stale = _write(tmp_path / ".abc.k3j2h1.partial.pt", 10, 3600)
    fresh = _write(tmp_path / ".abc.x9y8z7.partial.pt", 10, 5)  # another process is writing it
    stale_dir = tmp_path / ".lora.q1w2e3.partial"
    stale_dir.mkdir()
    _write(stale_dir / "weights.safetensors", 10, 3600)
    t = time.time() - 3600
    os.utime(stale_dir, (t, t))
    entry = _write(tmp_path / "abc.pt", 10, 3600)
    hidden = _write(tmp_path / ".keep", 10, 3600)
    removed = clean_partials(tmp_path, older_than_s=600)
    assert sorted(p.name for p in removed) == sorted([stale.name, stale_dir.name])
    assert fresh.exists() and entry.exists() and hidden.exists()
    assert not stale.exists() and not stale_dir.exists()
    assert clean_partials(tmp_path / "absent") == []
    assert [p.name for p in clean_partials(tmp_path, older_than_s=0)] == [fresh.name]


def test_cache_folders_are_cleaned_on_open(scene, tmp_path: Path) -> None:
    frames, depth = scene
    anchors, latents = tmp_path / "anchors", tmp_path / "latents"
    for folder, suffix in ((anchors, ".pt"), (latents, ".safetensors")):
        folder.mkdir()
        _write(folder / f".0123abcd.r4nd0m.partial{suffix}", 1000, 3600)
        _write(folder / f".0123abcd.wr1t1ng.partial{suffix}", 1000, 1)
    cfg = AnchorConfig(cache_dir=str(anchors), progress=False)
    build_anchor(frames, 24.0, TensorDepth(depth), make_trajectory("pan", 1.0, T), cfg)
    assert TrainingTensors.load_cached(latents / "missing.safetensors") is None
    for folder in (anchors, latents):
        assert [p.name for p in folder.glob(".*.partial*")] == [f".0123abcd.wr1t1ng.partial{p}" for p in
                                                                 ([".pt"] if folder == anchors else [".safetensors"])]


def test_anchor_entry_carries_its_checksum(scene, tmp_path: Path) -> None:
    frames, depth = scene
    cfg = AnchorConfig(cache_dir=str(tmp_path / "anchors"), progress=False)
    res = build_anchor(frames, 24.0, TensorDepth(depth), make_trajectory("truck", 0.1, T), cfg)
    raw = torch.load(tmp_path / "anchors" / f"{res.report['cache_key']}.pt", weights_only=True)
    stored = raw.pop("sha256")
    assert len(stored) == 64 and stored == caching.content_digest(raw)
    assert anchor_cache.load_entry(tmp_path / "anchors" / f"{res.report['cache_key']}.pt") is not None

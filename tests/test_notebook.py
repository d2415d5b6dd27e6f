"""`notebooks/quickstart.ipynb`: valid, output-free nbformat 4, and its code cells run end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


def _notebook() -> dict[str, Any]:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def _code_cells() -> list[tuple[str, str]]:
    """``(cell id, source)`` of every code cell, in order."""
    cells = _notebook()["cells"]
    return [(c["id"], "".join(c["source"])) for c in cells if c["cell_type"] == "code"]


def _exec_cells(cells: list[tuple[str, str]]) -> dict[str, Any]:
    """Run cells in one namespace, like a kernel does; tracebacks name the cell."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for cell_id, source in cells:
        exec(compile(source, f"quickstart.ipynb[{cell_id}]", "exec"), namespace)
    return namespace


def test_notebook_is_clean_nbformat4() -> None:
    nb = _notebook()
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 5
    assert nb["metadata"]["kernelspec"]["language"] == "python"
    ids = [c["id"] for c in nb["cells"]]
    assert len(set(ids)) == len(ids), "cell ids must be unique"
    kinds = [c["cell_type"] for c in nb["cells"]]
    assert set(kinds) == {"markdown", "code"} and kinds[0] == "markdown"
    for cell in nb["cells"]:
        assert isinstance(cell["source"], list) and all(isinstance(s, str) for s in cell["source"])
        assert cell["metadata"] == {}
        if cell["cell_type"] == "code":
            # committed with outputs cleared
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["id"]
    for cell_id, source in _code_cells():
        compile(source, f"quickstart.ipynb[{cell_id}]", "exec")  # SyntaxError names the cell
    # the steps the notebook promises, in order
    order = [cid for cid, _ in _code_cells()]
    assert order == ["setup", "trajectory", "anchor", "fit", "generate", "videos"]


def test_notebook_validates_with_nbformat() -> None:
    nbformat = pytest.importorskip("nbformat")  # in the dev extra; absent in minimal environments
    nbformat.validate(nbformat.read(str(NOTEBOOK), as_version=4))


@pytest.mark.parametrize("where", ["repo", "notebooks", "elsewhere"])
def test_setup_cell_finds_the_repository(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = {"repo": REPO, "notebooks": REPO / "notebooks", "elsewhere": tmp_path}[where]
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("RECAPTURE_NOTEBOOK_FAST", raising=False)
    monkeypatch.delenv("RECAPTURE_NOTEBOOK_RUN", raising=False)
    ns = _exec_cells(_code_cells()[:1])
    assert ns["REPO"] == REPO.resolve()
    assert ns["RUN"] == REPO.resolve() / "runs" / "quickstart"
    assert ns["FAST"] is False and ns["NUM_FRAMES"] == 8
    config = ns["COMMON"][ns["COMMON"].index("--config") + 1]
    assert Path(config) == REPO.resolve() / "configs" / "demo.yaml"
    assert "--trainer.max_steps" not in ns["COMMON"]  # the full demo unless FAST


@pytest.mark.slow
def test_notebook_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All code cells in FAST mode from a foreign working directory: every promised file is written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recapture.io import read_video

    run = tmp_path / "run"
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("RECAPTURE_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("RECAPTURE_NOTEBOOK_RUN", str(run))
    monkeypatch.setenv("WANDB_MODE", "offline")

    figures: list[tuple[int, int]] = []  # (rows, cols) of each figure shown

    def fake_show(*args: Any, **kwargs: Any) -> None:
        fig = plt.gcf()
        rows, cols = fig.axes[0].get_subplotspec().get_gridspec().get_geometry()
        figures.append((rows, cols))
        plt.close("all")

    monkeypatch.setattr(plt, "show", fake_show)

    cells = _code_cells()
    ns = _exec_cells(cells[:1])
    # headless stand-ins for IPython.display (real or the setup cell's fallback) that record what is shown
    assert {"Image", "Video", "display"} <= set(ns)
    shown: list[tuple[str, dict[str, Any]]] = []
    image, video = ns["Image"], ns["Video"]

    def record_image(filename: str) -> Any:
        shown.append(("image", {"filename": filename}))
        return image(filename=filename)

    def record_video(data: str, embed: bool = False) -> Any:
        shown.append(("video", {"data": data, "embed": embed}))
        obj = video(data, embed=embed)
        if hasattr(obj, "_repr_html_"):  # real IPython: the mp4 is read and base64-embedded
            assert "base64" in obj._repr_html_()
        return obj

    ns.update(Image=record_image, Video=record_video, display=lambda *objs: None)
    for cell_id, source in cells[1:]:
        exec(compile(source, f"quickstart.ipynb[{cell_id}]", "exec"), ns)

    assert ns["FAST"] is True and ns["RUN"] == run.resolve()
    expected = [
        "trajectory/trajectory.json", "trajectory/trajectory.png",
        "anchor/anchor.mp4", "anchor/mask.mp4", "anchor/preview.mp4", "anchor/report.json", "anchor_frames.png",
        "anchor.mp4", "mask.mp4", "generated.mp4", "refined.mp4", "comparison.mp4", "videos.mp4",
        "config.yaml", "report.json",
        "lora/spatial/pytorch_lora_weights.safetensors", "lora/temporal/pytorch_lora_weights.safetensors",
        "generate_seed1/generated.mp4", "generate_seed1/refined.mp4", "generate_seed1/comparison.mp4",
        "frames.png",
    ]
    missing = [name for name in expected if not (run / name).is_file()]
    assert not missing, f"not written: {missing}"
    assert not list(run.rglob("*.partial*")), "half-written files left behind"
    assert list((run / "wandb").glob("offline-run-*")), "the W&B offline run is not in RUN/wandb"
    assert not any(work.iterdir()), f"files written to the working directory: {list(work.iterdir())}"

    # FAST really shrank the run: 4 steps, 4 frames
    assert ns["cli"].trainer.global_step == 4
    report = json.loads((run / "report.json").read_text())
    assert report["global_step"] == 4 and report["anchor"]["num_frames"] == 4
    assert read_video(run / "generate_seed1" / "refined.mp4").frames.shape[0] == 4
    assert ns["anchor_report"]["coverage"][0] == pytest.approx(1.0)  # frame 0: the source camera

    # what was displayed: the trajectory preview, the embedded comparison video, two frame strips
    assert shown == [
        ("image", {"filename": str(run.resolve() / "trajectory" / "trajectory.png")}),
        ("video", {"data": str(run.resolve() / "comparison.mp4"), "embed": True}),
    ]
    assert figures == [(3, 1), (4, 4)]


@pytest.mark.slow
def test_notebook_runs_in_a_real_jupyter_kernel(tmp_path: Path) -> None:
    """As shipped (FAST mode only shortens the run; progress bars stay on), executed by nbclient in an
    ipykernel: Lightning's and the sampler's progress bars inside a kernel must not crash."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import os
    import sys

    from jupyter_client.kernelspec import KernelSpecManager

    # a kernel of THIS interpreter (the test's environment), whatever kernels the machine has
    spec_dir = tmp_path / "kernels" / "recapture-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "recapture test", "language": "python"}))
    manager = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    env = {"RECAPTURE_NOTEBOOK_FAST": "1", "RECAPTURE_NOTEBOOK_RUN": str(tmp_path / "run"), "WANDB_MODE": "offline",
           "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="recapture-test",
                                         resources={"metadata": {"path": str(tmp_path)}})
        client.kernel_manager_class_kwargs = {"kernel_spec_manager": manager}
        client.km = client.kernel_manager_class(kernel_name="recapture-test", kernel_spec_manager=manager)
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    assert (tmp_path / "run" / "refined.mp4").is_file() and (tmp_path / "run" / "report.json").is_file()
    fit = next(c for c in nb.cells if c.get("id") == "fit")
    assert any("trained 4 steps" in o.get("text", "") for o in fit.outputs)

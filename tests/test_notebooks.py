"""The notebooks in notebooks/ run top to bottom, are committed without outputs, and agree
with their source.

A person edits notebooks/NAME.py (jupytext percent format, checked by ruff); `make notebooks`
writes notebooks/NAME.ipynb from it, keeping the cell ids of the cells already there. The
pairing test fails when the two disagree.

Each notebook is executed in a fresh kernel of this interpreter (ipykernel's ``python3``
kernel resolves to ``sys.executable``, i.e. the project's virtualenv) with
``LIGHTCLIP_NOTEBOOK_FAST=1``, which shrinks training and measurements to a smoke run. A cell
that raises fails the test with the cell's source and traceback.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
SOURCES = sorted(NOTEBOOK_DIR.glob("*.py"))
# A hung cell fails the test; the margin is for a machine busy with other work.
CELL_TIMEOUT_S = 900


def test_the_four_notebooks_exist() -> None:
    names = {p.name for p in NOTEBOOKS}
    for expected in (
        "01_quickstart.ipynb",
        "02_token_alignment.ipynb",
        "03_soft_labels.ipynb",
        "04_data_pipeline.ipynb",
    ):
        assert expected in names


def test_every_notebook_has_a_source() -> None:
    assert [p.stem for p in NOTEBOOKS] == [p.stem for p in SOURCES]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_matches_its_source(path: Path, tmp_path: Path) -> None:
    # Not skipped without jupytext (a dev dependency): this is the only check of the pairing.
    import jupytext
    from jupytext.cli import jupytext as jupytext_cli

    book = nbformat.read(path, as_version=4)
    source = jupytext.read(path.with_suffix(".py"))
    have = [(c.cell_type, c.source) for c in book.cells]
    want = [(c.cell_type, c.source) for c in source.cells]
    for i, (h, w) in enumerate(zip(have, want, strict=False)):
        assert h == w, f"{path.name} cell {i} differs from {path.stem}.py; run `make notebooks`"
    assert len(have) == len(want), (
        f"{path.name} has {len(have)} cells, {path.stem}.py {len(want)}; run `make notebooks`"
    )
    ids = [c.id for c in book.cells]
    assert len(set(ids)) == len(ids), f"{path.name}: duplicate cell ids"

    # What `make notebooks` does, on a copy (with the repository's jupytext settings): it must
    # change nothing, cell ids and notebook metadata included.
    shutil.copy(NOTEBOOK_DIR.parent / "pyproject.toml", tmp_path)
    (tmp_path / "notebooks").mkdir()
    copy = tmp_path / "notebooks" / path.name
    shutil.copy(path, copy)
    shutil.copy(path.with_suffix(".py"), copy.with_suffix(".py"))
    assert jupytext_cli(["--to", "ipynb", "--update", "--quiet", str(copy.with_suffix(".py"))]) == 0
    resynced = nbformat.read(copy, as_version=4)
    assert [c.id for c in resynced.cells] == ids, f"{path.name}: re-syncing changed cell ids"
    assert resynced == book, f"{path.name} differs from what `make notebooks` writes"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    dirty = [
        i
        for i, cell in enumerate(book.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIGHTCLIP_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' logs and checkpoints
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        book,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name}: a cell raised:\n{error}", pytrace=False)
    finally:
        # LIGHTCLIP_NOTEBOOK_OUT=dir keeps the executed notebooks, to look at their outputs.
        keep = os.environ.get("LIGHTCLIP_NOTEBOOK_OUT")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            nbformat.write(book, Path(keep) / path.name)
    # Every code cell ran (none skipped by an early stop) and none left an error output.
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors

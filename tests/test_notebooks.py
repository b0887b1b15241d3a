"""Run every notebook in `nbs/` as a pytest test, so CI reports how many ran and which failed.

`nbdev_test` prints only "Success."; here each notebook is one test item, executed with nbdev's own
`test_nb` (the same cell filtering: `#| eval: false` cells and `nbdev_export()` calls are skipped).
Cells flagged `#| slow` run too, unless ATOMBERT_SKIP_SLOW=1.
"""
import json, os, re
from pathlib import Path

import pytest
from nbdev.test import test_nb as run_notebook  # aliased: pytest would collect a name starting with test_

NBS = Path(__file__).resolve().parents[1] / 'nbs'
notebooks = sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith('_'))


@pytest.mark.parametrize('nb', notebooks, ids=[p.stem for p in notebooks])
def test_notebook(nb):
    skip = ['slow'] if os.environ.get('ATOMBERT_SKIP_SLOW') == '1' else []
    ok, secs = run_notebook(nb, skip_flags=skip, basepath=NBS.parent)
    assert ok, f'{nb.name} failed (traceback above)'


SCRIPT_NOTEBOOKS = {'index', '09_profiling'}   # their cells are whole examples or scripts a reader copies, imports included
_IMPORT = re.compile(r'^(import \w|from [\w.]+ import )')


@pytest.mark.parametrize('nb', notebooks, ids=[p.stem for p in notebooks])
def test_test_cells_import_nothing(nb):
    "nbdev's docs build runs every cell that imports and does more: a test there would run while the docs are built."
    if nb.stem in SCRIPT_NOTEBOOKS: pytest.skip('a notebook of examples and scripts')
    for i, cell in enumerate(json.loads(nb.read_text())['cells']):
        lines = [l for l in ''.join(cell['source']).splitlines() if l.strip() and not l.startswith('#')]
        if cell['cell_type'] != 'code' or not lines or ''.join(cell['source']).startswith(('#| hide', '#| export')): continue
        imports = [l for l in lines if _IMPORT.match(l.strip())]
        assert not imports or len(imports) == len(lines), \
            f"{nb.name}, cell {i}: {imports[0].strip()!r} beside test code: move it to the notebook's hidden header cell"


@pytest.mark.parametrize('nb', notebooks, ids=[p.stem for p in notebooks])
def test_every_export_has_show_doc(nb):
    "Each exported function and class is documented where it is defined: a `show_doc` cell (constants need none)."
    import importlib
    text = '\n'.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'])
    m = re.search(r'^#\| default_exp (\S+)', text, re.M)
    if not m: pytest.skip('exports nothing')
    module = importlib.import_module(f'atombert.{m[1]}')
    names = [n for n in module.__all__ if callable(getattr(module, n)) and not n.isupper()]
    missing = [n for n in names if not re.search(rf'show_doc\({re.escape(n)}\b', text)]
    assert not missing, f'{nb.name}: no show_doc for {missing}'

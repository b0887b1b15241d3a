"""Run every notebook in `nbs/` as a pytest test, so CI reports how many ran and which failed.

`nbdev_test` prints only "Success."; here each notebook is one test item, executed with nbdev's own
`test_nb` (the same cell filtering: `#| eval: false` cells and `nbdev_export()` calls are skipped).
Cells flagged `#| slow` run too, unless ATOMBERT_SKIP_SLOW=1.
"""
import os
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

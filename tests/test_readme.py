import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_readme_matches_index_notebook():
    r = subprocess.run([sys.executable, 'tools/make_readme.py', '--check'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def test_readme_has_the_two_setup_commands():
    text = (ROOT/'README.md').read_text()
    assert "pip install torch==2.13.0 && pip install -e . && atombert" in text
    assert "pip install -e '.[dev]' && python -m pytest -q tests" in text

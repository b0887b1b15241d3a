import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_readme_matches_index_notebook():
    r = subprocess.run([sys.executable, 'tools/make_readme.py', '--check'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_make_readme_takes_only_its_flag(tmp_path):
    "A typo or --help never rewrites README.md: argparse refuses the one and only prints for the other."
    before = (ROOT/'README.md').stat().st_mtime_ns
    typo = subprocess.run([sys.executable, 'tools/make_readme.py', '--chek'], cwd=ROOT, capture_output=True, text=True)
    helped = subprocess.run([sys.executable, 'tools/make_readme.py', '--help'], cwd=ROOT, capture_output=True, text=True)
    assert typo.returncode == 2 and 'unrecognized arguments: --chek' in typo.stderr and helped.returncode == 0 and '--check' in helped.stdout
    assert (ROOT/'README.md').stat().st_mtime_ns == before

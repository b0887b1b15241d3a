"""`atombert/` is exactly what the notebooks export: running `nbdev_export` changes nothing."""
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def snapshot():
    return {p.relative_to(ROOT).as_posix(): p.read_bytes() for p in sorted((ROOT/'atombert').rglob('*.py'))}


def test_nbdev_export_changes_nothing():
    before = snapshot()
    r = subprocess.run([str(Path(sys.executable).parent/'nbdev_export')], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    after = snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f'atombert/ differs from what nbs/ exports: {changed} (run nbdev_export and nbdev_clean, then commit)'

"""The README's main job: `atombert run --demo` (the embedded offline default) end to end."""
import os, re, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ATOMBERT = str(Path(sys.executable).parent/'atombert')


@pytest.mark.slow
def test_run_demo_writes_the_report_with_its_plots(tmp_path):
    env = {**os.environ, 'HF_DATASETS_OFFLINE': '1', 'HF_HUB_OFFLINE': '1', 'ATOMBERT_CACHE': str(tmp_path/'cache')}
    r = subprocess.run([ATOMBERT, 'run', '--demo', '--out', str(tmp_path/'run'), '--no-progress'], capture_output=True,
                       text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    report = (tmp_path/'run'/'report.md').read_text()
    images = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', report)
    assert len(images) >= 4, report
    for img in images: assert (tmp_path/'run'/img).stat().st_size > 5000, img
    # the templated NLI set is learnable: the finetuned model is clearly above the majority class
    acc = [float(a) for a in re.findall(r'\| validation_\w+ \| ([\d.]+)%', report)]
    assert len(acc) == 2 and min(acc) > 50, report

"""The README's first command, run as written in a fresh clone and a new virtual environment: it installs atombert
and runs the main job on its embedded offline default (`atombert run --demo`), which writes the report with its
plots. (The second command, the tests, is what CI runs: `.ci/run` takes it from the README too.)"""
import os, re, subprocess, sys, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
from readme_commands import readme_commands


def test_the_readme_has_two_commands_and_ci_runs_the_second():
    cmds = readme_commands()
    assert 'atombert run --demo' in cmds['main'] and 'pip install torch==2.13.0' in cmds['main']
    assert 'pytest' in cmds['test'] and 'pip install torch==2.13.0' in cmds['test']
    assert 'pip install torch==2.13.0 && pip install -e . && atombert' in cmds['main']
    assert "pip install -e '.[dev]' && python -m pytest -q -n 2 tests" in cmds['test']
    assert 'tools/readme_commands.py test' in (ROOT/'.ci'/'run').read_text()


@pytest.mark.slow(minutes=10)
def test_readme_main_command_in_a_fresh_clone(tmp_path):
    clone = tmp_path/'atombert'
    subprocess.run(['git', 'clone', '-q', str(ROOT), str(clone)], check=True)
    # a new machine's shell: no virtual environment of ours on the PATH
    venv_bin = str(Path(sys.prefix)/'bin')
    env = {k: v for k, v in os.environ.items() if k not in ('VIRTUAL_ENV', 'PYTHONPATH', 'PYTHONHOME')}
    env['PATH'] = os.pathsep.join(p for p in env['PATH'].split(os.pathsep) if p != venv_bin)
    env.update(HF_DATASETS_OFFLINE='1', HF_HUB_OFFLINE='1', ATOMBERT_CACHE=str(tmp_path/'cache'))
    t0 = time.time()
    r = subprocess.run(['bash', '-c', readme_commands()['main']], cwd=clone, env=env, capture_output=True, text=True)
    print(f'README main command: {time.time() - t0:.0f} s (install and demo run)')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    run = clone/'runs'/'demo'
    report = (run/'report.md').read_text()
    images = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', report)
    assert len(images) >= 4, report
    for img in images: assert (run/img).stat().st_size > 5000, img
    # the templated NLI set is learnable: the finetuned model is clearly above the majority class (33%)
    acc = [float(a) for a in re.findall(r'\| validation_\w+ \| ([\d.]+)%', report)]
    assert len(acc) == 2 and min(acc) > 50, report
    assert (clone/'.venv'/'bin'/'atombert').exists()

"""`tools/gpu_check.sh --dry-run`: the GPU check of issue 15 run on CPU at smoke size, so that it cannot rot before a
GPU runs it. It must pass, with every part's JSON in the shape the GPU run writes; a failing part is recorded and
makes the exit status non-zero; a missing dependency without wheels fails at once with one line."""
import json, os, re, subprocess, sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow(minutes=1)    # whole scripts at smoke size: with `-n 2` these start early
ROOT = Path(__file__).resolve().parents[1]


def gpu_check(*args, **env):
    return subprocess.run(['bash', 'tools/gpu_check.sh', *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, 'PYTHON': sys.executable, **env})


def test_dry_run(tmp_path):
    out = tmp_path/'gpu_check.json'
    r = gpu_check('--dry-run', '--out', out, '--work', tmp_path/'work', OUT=str(tmp_path/'device_out'))
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep['dry_run'] is True and rep['ok'] is True
    assert (tmp_path/'device_out'/'gpu_check.json').exists() and (tmp_path/'device_out'/'gpu_check.log').exists()   # $OUT too
    assert set(rep['parts']) == {'environment', 'cuda_tests', 'pretrain_step', 'pretraining'}
    assert all(p['status'] == 'ok' for p in rep['parts'].values()), {k: p.get('error') for k, p in rep['parts'].items()}
    assert rep['recipe']['batch_size'] == 256 and rep['recipe']['seq_len'] == 128 and rep['recipe']['preset'] == 'atombert-8m'
    assert rep['parts']['environment']['cuda_available'] is False

    # 1. the CUDA tests: collected with -m cuda, every one of them skipped here
    t = rep['parts']['cuda_tests']
    names = {x['name'].split('[')[0] for x in t['tests']}
    assert t['collected'] >= 9 and t['skipped'] == t['collected'] and t['passed'] == t['failed'] == t['errors'] == 0
    assert {'test_outputs_equal_transformers_on_cuda', 'test_bf16_training_on_cuda', 'test_flash_attention_selected',
            'test_fp16_loss_scaler_skips_and_counts_a_forced_overflow', 'test_compiled_training_step_equals_eager',
            'test_checkpoint_and_exact_resume_on_cuda'} <= names
    assert all(x['message'] == 'needs a CUDA GPU' for x in t['tests'])

    # 2. the benchmark: atombert against transformers with SDPA, and with eager attention
    s = rep['parts']['pretrain_step']
    assert {r['contender'] for r in s['rows']} == {'atombert', 'transformers (sdpa)', 'transformers (eager)'}
    assert all(r['tokens_per_s'] > 0 and r['ms_per_step'] > 0 and r['peak_mb'] > 0 for r in s['rows'])
    assert all(r['atombert_speedup'] > 0 for r in s['rows'] if r['contender'] != 'atombert')
    assert {a: run['transformers_attention'] for a, run in s['runs'].items()} == {'sdpa': 'sdpa', 'eager': 'eager'}
    for run in s['runs'].values():   # the same weights: the same loss with either attention (bf16 autocast)
        c = run['result']['contenders']
        assert abs(c['atombert']['loss'] - c['transformers']['loss']) < 2e-2 * c['atombert']['loss']
    assert s['runs']['sdpa']['result']['args']['precision'] == 'bf16'

    # 3. the timed pretraining run on the builtin corpus, the finetuning steps and the extrapolation
    p = rep['parts']['pretraining']
    x, y, f = p['pretraining'], p['finetuning'], p['full_recipe']
    assert x['corpus'] == 'builtin' and x['steps_logged'] >= 4 and x['window_steps'] > 0
    assert x['tokens_per_s_real'] > 0 and x['tokens_per_s_padded'] >= x['tokens_per_s_real']
    assert 0 < x['mean_real_tokens_per_row'] <= x['mean_padded_width'] <= p['spec']['seq_len']
    assert x['data_ms_per_step'] > 0 and x['train_tokens'] > 10_000 and x['bench_ms_per_step'] > 0
    assert y['seconds_per_step'] > 0 and y['mean_batch_rows'] > 1
    # the builtin corpus was read once beforehand, apart from the timed tokenizing that is scaled to WikiText-103
    assert x['corpus_read_s'] > 0 and 0 < x['tokenizer_training_s'] and 0 < x['pretokenize_s']
    assert 'read beforehand' in f['assumptions']['data_preparation']
    # the same pretraining with the batches masked in DataLoader workers
    wk = p['pretraining_workers']
    assert wk['num_workers'] == 2 and wk['steps_logged'] >= 2 and wk['seconds_per_step'] > 0 and wk['speedup_over_in_process'] > 0
    assert 'DataLoader workers (--num-workers)' in r.stdout
    # finetuning twice over the same batches: the second run is the steady state, the first one pays for new shapes
    first = y['first_run']
    assert first['batches'] > 0 and 0 < first['distinct_shapes'] <= first['batches'] and y['distinct_shapes'] > 0
    assert f['seconds_per_new_shape'] >= 0 and f['seconds_per_finetuning_step'] == y['seconds_per_step']
    assert f['pretraining_steps'][0] == 7630 and f['finetuning_steps'] == 24544     # 2 × 125M / (256 × 128); 2 × 392,702 / 32
    assert 0 < f['pretraining_hours'][0] <= f['pretraining_hours'][1] and 0 < f['total_hours'][0] <= f['total_hours'][1]
    assert {'wikitext103_train_tokens', 'finetuning', 'seconds_per_pretraining_step'} <= set(f['assumptions'])

    # the printed table
    assert 'part' in r.stdout and 'DRY RUN (CPU, smoke size): all parts ok' in r.stdout
    assert 'transformers (eager)' in r.stdout and 'full recipe (extrapolated)' in r.stdout


def test_a_failing_part_is_recorded_and_fails_the_run(tmp_path):
    out = tmp_path/'gpu_check.json'
    r = gpu_check('--dry-run', '--parts', 'environment,pretrain_step', '--inject-failure', 'pretrain_step', '--out', out,
                  '--work', tmp_path/'work')
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep['ok'] is False and rep['parts']['environment']['status'] == 'ok'
    assert rep['parts']['pretrain_step']['status'] == 'failed' and 'injected failure' in rep['parts']['pretrain_step']['error']
    assert 'FAILED: pretrain_step' in r.stdout


def test_missing_dependency_without_wheels_fails_in_one_line(tmp_path):
    r = gpu_check('--dry-run', GPU_CHECK_MODULES='no_such_module_for_gpu_check', GPU_CHECK_WHEELS=str(tmp_path/'no_wheels'))
    assert r.returncode == 2
    assert r.stderr.startswith('gpu_check: error: ') and r.stderr.count('\n') == 1 and 'gpu_wheels.sh' in r.stderr, r.stderr


def test_cuda_tests_run_on_cpu(tmp_path):
    "The CUDA tests' own code, run on the CPU (ATOMBERT_CUDA_TESTS_DEVICE=cpu), so that it cannot rot before a GPU runs it."
    report = tmp_path/'cuda_report.json'
    r = subprocess.run([sys.executable, '-m', 'pytest', '-m', 'cuda', '-q', '-p', 'no:cacheprovider', '--basetemp', str(tmp_path/'t'),
                        'tests/test_cuda.py'], cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, 'CUDA_VISIBLE_DEVICES': '', 'ATOMBERT_CUDA_TESTS_DEVICE': 'cpu',
                            'ATOMBERT_CUDA_REPORT': str(report)})
    assert r.returncode == 0 and re.search(r'^12 passed\b', r.stdout, re.M) and 'skipped' not in r.stdout, r.stdout[-5000:] + r.stderr[-3000:]
    rep = json.loads(report.read_text())
    assert rep['gpu'] == 'cpu' and {'interop_max_abs_diff', 'bf16_mlm_loss', 'fp16', 'attention', 'compile', 'resume'} <= set(rep)
    assert rep['fp16']['skipped_steps'] >= 1 and rep['resume']['bitwise'] is True
    assert len(rep['interop_max_abs_diff']) == 4


def test_rehearsal_without_python_312_fails_in_one_line(tmp_path):
    "tools/gpu_rehearsal.sh (the dry run and the CUDA tests with the GPU machine's versions) names a missing interpreter."
    r = subprocess.run(['bash', 'tools/gpu_rehearsal.sh'], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, 'PYTHON312': str(tmp_path/'no-python3.12'), 'REHEARSAL_VENV': str(tmp_path/'venv')})
    assert r.returncode == 2 and r.stderr == 'gpu_rehearsal: error: no Python 3.12 interpreter found (set PYTHON312)\n', r.stderr
    assert not (tmp_path/'venv').exists()


def test_extrapolation_from_known_rates():
    "The full recipe's hours from given rates: WikiText-103 × 2 epochs at 256 × 128 is 7,630 steps, MNLI × 2 at 32 is 24,544."
    import math
    import pytest
    sys.path.insert(0, str(ROOT/'tools'))
    from gpu_timing import MNLI_SHAPES, WIKITEXT103_TOKENS, extrapolate
    pre = dict(corpus_tokens_per_example=120.0, seconds_per_step=0.04, tokenizer_training_s=5.0, pretokenize_s=7.0,
               train_tokens=300_000, vocab_size=9000)
    fin = dict(seconds_per_step=0.016, mean_padded_width=52.5, mean_batch_rows=32, first_run=dict(training_s=20.0, batches=166, distinct_shapes=67))
    rec = dict(batch_size=256, seq_len=128, pretrain_epochs=2, finetune_epochs=2, finetune_batch_size=32, vocab_size=30000)
    r = extrapolate(pre, fin, rec)
    assert r['pretraining_steps'] == [7630, math.ceil(2 * WIKITEXT103_TOKENS / (256 * 120.0))] and r['finetuning_steps'] == 24544
    per_shape = (20.0 - 166 * 0.016) / 67
    assert r['seconds_per_new_shape'] == pytest.approx(per_shape)
    assert r['pretraining_hours'][0] == round(7630 * 0.04 / 3600, 3)
    assert r['finetuning_hours'] == round((24544 * 0.016 + per_shape * MNLI_SHAPES) / 3600, 3)
    assert r['data_preparation_hours'] == round(12.0 * WIKITEXT103_TOKENS / 300_000 / 3600, 3)

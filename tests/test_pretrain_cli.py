"""`atombert pretrain` end to end: the command, resume after SIGKILL, DDP on CPU, and bad input."""
import json, os, signal, subprocess, sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('ATOMBERT_SHARED_DATA', ROOT.parent/'shared'/'data'))
VALID = SHARED/'wikitext'/'wikitext-2-raw'/'wiki.valid.raw'
HELD_OUT = VALID.parent/'wiki.test.raw'      # another text: a corpus held out by itself is refused
ENV = {**os.environ, 'HF_DATASETS_OFFLINE': '1', 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'OMP_NUM_THREADS': '1'}


ATOMBERT = str(Path(sys.executable).parent/'atombert')     # the installed console script


def atombert(*args, **kw):
    return subprocess.run([ATOMBERT, *map(str, args)], capture_output=True, text=True, env=ENV, cwd=ROOT, **kw)


def common(tmp_path, *extra):
    return ['pretrain', '--corpus', VALID, '--preset', 'tiny', '--vocab-size', 1000, '--seq-len', 64, '--batch-size', 8,
            '--lr', 3e-3, '--seed', 1, '--no-progress', '--cache-dir', tmp_path/'cache', *extra]


def weights(run):
    return load_file(Path(run)/'model.safetensors')


@pytest.fixture(scope='module')
def tokenizer_dir(tmp_path_factory):
    "One tokenizer for the module, so that runs compared with each other share it exactly."
    d = tmp_path_factory.mktemp('tok')
    from atombert.corpora import load_corpus
    from atombert.tokenizer import train_tokenizer, save_tokenizer
    save_tokenizer(train_tokenizer(load_corpus(VALID).texts(), vocab_size=1000, show_progress=False), d)
    return d


def test_pretrain_end_to_end(tmp_path, tokenizer_dir):
    r = atombert(*common(tmp_path, '--tokenizer', tokenizer_dir, '--max-steps', 12, '--out', tmp_path/'run',
                         '--eval-corpus', HELD_OUT, '--eval-every', 6, '--eval-batches', 2))
    assert r.returncode == 0, r.stderr
    from atombert import AtomBertForPreTraining
    m = AtomBertForPreTraining.from_pretrained(tmp_path/'run')
    assert m.config.vocab_size == 1000
    rows = [json.loads(l) for l in (tmp_path/'run'/'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows if r['split'] == 'eval'] == [0, 6, 12]
    assert (tmp_path/'run'/'plots'/'training.png').stat().st_size > 10_000


def test_resume_after_sigkill_gives_the_same_weights(tmp_path, tokenizer_dir):
    args = common(tmp_path, '--tokenizer', tokenizer_dir, '--max-steps', 40, '--save-every', 5, '--grad-accum', 2)
    straight = atombert(*args, '--out', tmp_path/'straight')
    assert straight.returncode == 0, straight.stderr
    # the same run, killed with SIGKILL in its 16th step (the 31st micro-batch; tests/fault_runner.py), then resumed
    run = tmp_path/'killed'
    p = subprocess.run([sys.executable, str(Path(__file__).parent/'fault_runner.py'), *map(str, args), '--out', str(run)],
                       env={**ENV, 'ATOMBERT_FAULT': 'kill:loss:31'}, cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert sorted(c.name for c in (run/'checkpoints').iterdir()) == ['step-00000010', 'step-00000015']
    assert not (run/'model.safetensors').exists()        # it really was killed mid-way
    resumed = atombert(*args, '--out', run, '--resume')
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(tmp_path/'straight'), weights(run)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), 'resumed weights differ from the uninterrupted run'
    steps = [json.loads(l)['step'] for l in (run/'metrics.jsonl').read_text().splitlines()]
    assert steps == sorted(set(steps))                   # the log has no duplicated steps after resuming


@pytest.mark.parametrize('token_objective,objective,processes', [('mlm', 'sop', 2), ('rtd', 'sop', 2), ('mlm', 'sop', 4), ('rtd', 'sop', 4),
                                                                 ('mlm', 'nsp', 2), ('rtd', 'nsp', 4), ('mlm', 'none', 4), ('rtd', 'none', 2)])
def test_ddp_processes_match_one(tmp_path, tokenizer_dir, token_objective, objective, processes):
    # 4 processes: the third and fourth used to find no token cache of their own (KeyError: 'train'). objective none:
    # the pooler gets no gradient, which DDP tolerates only when told (find_unused_parameters)
    # no dropout: its masks are drawn per process, so they cannot match a single process's. RTD: the generator's
    # samples come from each example's seed (MaskingCollator(sample_uniforms=True)), so they match too
    args = common(tmp_path, '--tokenizer', tokenizer_dir, '--max-steps', 6, '--batch-size', 8, '--objective', objective, '--dropout', 0,
                  '--precision', 'fp32', '--token-objective', token_objective,   # exact math: bf16 rounds the processes' sums differently
                  '--eval-corpus', HELD_OUT, '--eval-every', 3, '--eval-batches', 2)   # the held-out examples must not depend on the processes
    one = atombert(*args, '--out', tmp_path/'one')
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(processes),
                          ATOMBERT, *map(str, args), '--out', str(tmp_path/'two')],
                         capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert two.returncode == 0, two.stderr[-3000:]
    for model in ['.', 'generator'] if token_objective == 'rtd' else ['.']:
        a, b = weights(tmp_path/'one'/model), weights(tmp_path/'two'/model)
        worst = max((a[k] - b[k]).abs().max().item() for k in a)
        assert worst < 1e-5, (model, worst)
    evals = [[r for r in map(json.loads, (tmp_path/run/'metrics.jsonl').read_text().splitlines()) if r['split'] == 'eval']
             for run in ('one', 'two')]
    assert [r['step'] for r in evals[0]] == [r['step'] for r in evals[1]] == [0, 3, 6]
    # RTD's held-out numbers rest on the generator's samples, a discrete pick from its softmax: the processes' rows are
    # padded to other lengths, so their logits differ in the last bits, and a uniform that falls that close to a bound
    # can pick the next token. One such pick moved rtd_loss by 1.3e-5 (rtd-nsp-4, seed 1): captured by wrapping
    # `sample_tokens`, that pick's uniform lay 0.0 from a CDF bound with one process and 6e-8 (one float32 step) with four;
    # the nearest others of the held-out batches (seeds 1 and 2) lay 4e-7 to 1e-6 from one and did not flip. A pick can
    # move a mean over the ~1,000 held-out tokens by up to ~1e-3 and recall over its ~150 replaced ones by ~7e-3, and the
    # discriminator's sentence numbers read the picks too; the weights above, and MLM's numbers, stay within 1e-5
    sampled = {'rtd_loss', 'rtd_accuracy', 'replaced', 'replaced_recall', f'{objective}_loss', f'{objective}_accuracy'}
    for a, b in zip(*evals):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < (1e-2 if token_objective == 'rtd' and k in sampled else 1e-5)
                                            for k in a if k not in ('split', 'time')), (a, b)


@pytest.mark.parametrize('case', ['empty', 'binary', 'missing', 'seq_len', 'tokenizer'])
def test_bad_input_one_line_and_nothing_lost(tmp_path, tokenizer_dir, case):
    out = tmp_path/'out'; out.mkdir(); (out/'keep.txt').write_text('precious')
    (tmp_path/'empty.txt').write_text('\n \n')
    (tmp_path/'blob.bin').write_bytes(bytes(range(256)) * 40)
    corpus = {'empty': tmp_path/'empty.txt', 'binary': tmp_path/'blob.bin', 'missing': tmp_path/'nope.txt'}.get(case, VALID)
    extra = {'seq_len': ['--seq-len', 4096]}.get(case, [])
    if case == 'tokenizer':      # resuming a run with a tokenizer of another vocabulary
        run = tmp_path/'run'
        assert atombert(*common(tmp_path, '--tokenizer', tokenizer_dir, '--max-steps', 2, '--out', run)).returncode == 0
        other = tmp_path/'other_tok'
        from atombert.tokenizer import train_tokenizer, save_tokenizer
        save_tokenizer(train_tokenizer(['some other text entirely'] * 50 + ['and more words here'] * 50, vocab_size=200,
                                       show_progress=False), other)
        before = weights(run)
        r = atombert(*common(tmp_path, '--tokenizer', other, '--max-steps', 4, '--out', run, '--resume'))
        assert r.returncode != 0 and r.stderr.count('\n') == 1 and 'tokenizer' in r.stderr, r.stderr
        after = weights(run)
        assert all(torch.equal(before[k], after[k]) for k in before)
        return
    r = atombert('pretrain', '--corpus', corpus,
                 '--preset', 'tiny', '--max-steps', 2, '--out', tmp_path/'fresh', '--no-progress', '--cache-dir', tmp_path/'cache', *extra)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith('atombert: error: ') and r.stderr.count('\n') == 1, r.stderr
    expected = {'empty': 'empty corpus', 'binary': 'binary', 'missing': 'nope.txt', 'seq_len': '--seq-len 4096'}[case]
    assert expected in r.stderr
    assert not (tmp_path/'fresh').exists()
    # and an existing, non-empty output directory is refused without --resume, untouched
    r = atombert('pretrain', '--corpus', VALID, '--preset', 'tiny', '--max-steps', 2, '--out', out, '--no-progress')
    assert r.returncode == 1 and '--resume' in r.stderr
    assert [p.name for p in out.iterdir()] == ['keep.txt'] and (out/'keep.txt').read_text() == 'precious'


def test_only_the_flags_given_set_the_length(tmp_path, tokenizer_dir):
    "--budget-minutes alone sets the length from the command line, and a plain --resume keeps a run's recorded length."
    args = common(tmp_path, '--tokenizer', tokenizer_dir, '--eval-every', 0)
    r = atombert(*args, '--budget-minutes', 0.03, '--out', tmp_path/'budget')
    assert r.returncode == 0, r.stderr[-3000:]
    budget = json.loads((tmp_path/'budget'/'run.json').read_text())['budget']
    assert atombert(*args, '--budget-minutes', 0.03, '--max-steps', 5, '--out', tmp_path/'both').returncode == 1   # one or the other
    r = atombert(*args, '--max-steps', 3, '--out', tmp_path/'short')
    assert r.returncode == 0, r.stderr[-3000:]
    for run in ('budget', 'short'):
        again = atombert(*args, '--resume', '--out', tmp_path/run)
        assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path/'budget'/'run.json').read_text())['budget'] == budget
    assert json.loads((tmp_path/'short'/'run.json').read_text())['args']['max_steps'] == 3       # not PRETRAIN_ARGS' 6000
    assert [json.loads(l)['step'] for l in (tmp_path/'short'/'metrics.jsonl').read_text().splitlines()][-1] == 3

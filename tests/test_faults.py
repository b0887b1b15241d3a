"""Faults: SIGKILL at several points of `atombert pretrain` and `atombert finetune` (also in the middle of a
checkpoint write), a disk that fills up while writing, and damaged files. The output directory always holds
complete, loadable checkpoints; `--resume` ends with exactly the uninterrupted run's weights (CPU)."""
import json, os, random, signal, subprocess, sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from atombert import AtomBertForPreTraining
from atombert.files import sha256_file
from atombert.trainer_state import checkpoints

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('ATOMBERT_SHARED_DATA', ROOT.parent/'shared'/'data'))
VALID = SHARED/'wikitext'/'wikitext-2-raw'/'wiki.valid.raw'
ENV = {**os.environ, 'HF_DATASETS_OFFLINE': '1', 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'OMP_NUM_THREADS': '1'}
ATOMBERT = str(Path(sys.executable).parent/'atombert')
RUNNER = [sys.executable, str(Path(__file__).parent/'fault_runner.py')]


def atombert(*args, fault=None):
    "Run the command (through the fault runner when `fault` is given); returns the CompletedProcess."
    cmd = (RUNNER if fault else [ATOMBERT]) + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**ENV, 'ATOMBERT_FAULT': fault or ''})


def assert_complete_checkpoints(run, cls=AtomBertForPreTraining):
    "Every checkpoint the run shows is whole: weights load (their checksum holds) and the trainer state matches its checksum."
    cks = checkpoints(run)
    assert cks, f'no complete checkpoint in {run}'
    for ck in cks:
        cls.from_pretrained(ck)
        assert json.loads((ck/'trainer_state.json').read_text())['sha256'] == sha256_file(ck/'trainer_state.pt')
    return [int(ck.name.split('-')[1]) for ck in cks]


def same_weights(a, b):
    a, b = load_file(Path(a)/'model.safetensors'), load_file(Path(b)/'model.safetensors')
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope='module')
def tokenizer_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('tok')
    from atombert.corpora import load_corpus
    from atombert.tokenizer import train_tokenizer, save_tokenizer
    save_tokenizer(train_tokenizer(load_corpus(VALID).texts(), vocab_size=1000, show_progress=False), d)
    return d


def pretrain_args(tmp_path, tokenizer_dir, *extra):
    return ['pretrain', '--corpus', VALID, '--preset', 'tiny', '--tokenizer', tokenizer_dir, '--seq-len', 64,
            '--batch-size', 8, '--grad-accum', 2, '--lr', 3e-3, '--seed', 3, '--no-progress',
            '--cache-dir', tmp_path/'cache', '--max-steps', 40, '--save-every', 5, *extra]


def test_pretrain_killed_at_several_points_resumes_exactly(tmp_path, tokenizer_dir):
    args = pretrain_args(tmp_path, tokenizer_dir)
    straight = atombert(*args, '--out', tmp_path/'straight')
    assert straight.returncode == 0, straight.stderr
    run = tmp_path/'run'
    # 1. killed while writing the weights of its 2nd checkpoint (step 10): the half-written one is not shown
    r = atombert(*args, '--out', run, fault='kill:safetensors:2')
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert assert_complete_checkpoints(run) == [5]
    # 2. resumed, then killed while writing the trainer state of its 2nd checkpoint (step 15)
    r = atombert(*args, '--out', run, '--resume', fault='kill:torch:2')
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert assert_complete_checkpoints(run) == [5, 10]
    # 3. resumed, then killed at two random points of the training (2 micro-batches per step: also mid-step)
    rng = random.Random(0)
    for _ in range(2):
        r = atombert(*args, '--out', run, '--resume', fault=f'kill:loss:{rng.randint(3, 20)}')
        assert r.returncode == -signal.SIGKILL, r.stderr
        assert_complete_checkpoints(run)
    # 4. resumed to the end: the same weights, bit for bit, and a log without repeated steps
    r = atombert(*args, '--out', run, '--resume')
    assert r.returncode == 0, r.stderr
    assert same_weights(tmp_path/'straight', run), 'resumed weights differ from the uninterrupted run'
    steps = [(row['split'], row['step']) for row in map(json.loads, (run/'metrics.jsonl').read_text().splitlines())]
    assert len(steps) == len(set(steps))


def test_rtd_pretrain_killed_resumes_exactly(tmp_path, tokenizer_dir):
    "ELECTRA: killed anywhere in a step (sampling draws from the checkpointed RNG), resumed: discriminator and generator equal the uninterrupted run's."
    args = pretrain_args(tmp_path, tokenizer_dir, '--token-objective', 'rtd', '--generator-size', 0.5, '--max-steps', 20)
    straight = atombert(*args, '--out', tmp_path/'straight')
    assert straight.returncode == 0, straight.stderr
    run = tmp_path/'run'
    for nth in (13, 9):                          # mid-step kills (2 micro-batches a step), after checkpoints 5 and 10
        r = atombert(*args, '--out', run, *(['--resume'] if nth == 9 else []), fault=f'kill:loss:{nth}')
        assert r.returncode == -signal.SIGKILL, r.stderr
        assert_complete_checkpoints(run)
    r = atombert(*args, '--out', run, '--resume')
    assert r.returncode == 0, r.stderr
    assert same_weights(tmp_path/'straight', run) and same_weights(tmp_path/'straight'/'generator', run/'generator')
    assert not same_weights(tmp_path/'straight', tmp_path/'straight'/'generator')   # the check can tell models apart


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory, tokenizer_dir):
    "A tiny pretrained model directory (with its tokenizer) to finetune."
    d = tmp_path_factory.mktemp('pre')
    r = atombert(*pretrain_args(d, tokenizer_dir, '--max-steps', 3, '--out', d/'model'))
    assert r.returncode == 0, r.stderr
    return d/'model'


def finetune_args(model):
    return ['finetune', '--model', model, '--data', 'builtin', '--max-steps', 24, '--save-every', 4, '--batch-size', 16,
            '--lr', 1e-3, '--seed', 5, '--no-progress']



def test_finetune_killed_at_several_points_resumes_exactly(tmp_path, pretrained):
    from atombert import AtomBertForSequenceClassification as Clf
    args = finetune_args(pretrained)
    straight = atombert(*args, '--out', tmp_path/'straight')
    assert straight.returncode == 0, straight.stderr
    run = tmp_path/'run'
    r = atombert(*args, '--out', run, fault='kill:torch:2')        # in the trainer state of checkpoint step 8
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert assert_complete_checkpoints(run, Clf) == [4]
    r = atombert(*args, '--out', run, '--resume', fault='kill:safetensors:3')   # in the weights of checkpoint step 16
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert assert_complete_checkpoints(run, Clf) == [8, 12]
    r = atombert(*args, '--out', run, '--resume', fault=f'kill:loss:{random.Random(1).randint(2, 8)}')   # at a random step
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert max(assert_complete_checkpoints(run, Clf)) >= 12
    r = atombert(*args, '--out', run, '--resume')
    assert r.returncode == 0, r.stderr
    assert same_weights(tmp_path/'straight', run), 'resumed weights differ from the uninterrupted run'


def test_full_disk_while_checkpointing_keeps_the_previous_one(tmp_path, tokenizer_dir):
    run = tmp_path/'run'
    r = atombert(*pretrain_args(tmp_path, tokenizer_dir, '--max-steps', 12), '--out', run, fault='enospc:torch:2')
    assert r.returncode == 1
    assert r.stderr.count('\n') == 1 and 'No space left on device' in r.stderr and 'previous checkpoint' in r.stderr, r.stderr
    assert assert_complete_checkpoints(run) == [5]
    assert [p.name for p in (run/'checkpoints').iterdir()] == ['step-00000005']   # no half-written directory


@pytest.mark.parametrize('damage', ['truncated-weights', 'altered-weights', 'altered-trainer-state', 'config-missing-field',
                                    'config-wrong-field', 'other-tokenizer'])
def test_damaged_checkpoint_is_refused_before_training(tmp_path, tokenizer_dir, pretrained, damage):
    args = finetune_args(pretrained)
    run = tmp_path/'run'
    r = atombert(*args, '--max-steps', 4, '--out', run)
    assert r.returncode == 0, r.stderr
    ck = checkpoints(run)[-1]
    model_dir = pretrained
    if damage == 'truncated-weights':
        (ck/'model.safetensors').write_bytes((ck/'model.safetensors').read_bytes()[:500])
    elif damage == 'altered-weights':
        b = bytearray((ck/'model.safetensors').read_bytes()); b[-3] ^= 0xFF; (ck/'model.safetensors').write_bytes(bytes(b))
    elif damage == 'altered-trainer-state':
        b = bytearray((ck/'trainer_state.pt').read_bytes()); b[len(b) // 2] ^= 0xFF; (ck/'trainer_state.pt').write_bytes(bytes(b))
    elif damage.startswith('config'):
        cfg = json.loads((ck/'config.json').read_text())
        section = cfg['atombert'] if 'atombert' in cfg else cfg
        if damage == 'config-missing-field': section.pop('hidden_size')
        else: section['hidden_size'] = 'large'
        (ck/'config.json').write_text(json.dumps(cfg))
    else:                                        # the model to finetune now comes from another run, with another tokenizer
        other_tok = tmp_path/'other_tok'
        from atombert.tokenizer import train_tokenizer, save_tokenizer
        save_tokenizer(train_tokenizer(['completely different words'] * 40 + ['in another corpus'] * 40, vocab_size=120,
                                       show_progress=False), other_tok)
        model_dir = tmp_path/'other_model'
        assert atombert(*pretrain_args(tmp_path, other_tok, '--max-steps', 2, '--out', model_dir)).returncode == 0
    before = {p.name: p.read_bytes() for p in ck.iterdir()}
    r = atombert(*finetune_args(model_dir), '--max-steps', 8, '--out', run, '--resume')
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith('atombert: error: ') and r.stderr.count('\n') == 1, r.stderr
    expected = {'truncated-weights': 'model.safetensors', 'altered-weights': 'checksum', 'altered-trainer-state': 'trainer_state.pt',
                'config-missing-field': 'hidden_size', 'config-wrong-field': 'hidden_size', 'other-tokenizer': 'tokenizer'}[damage]
    assert expected in r.stderr, r.stderr
    assert not (run/'metrics.jsonl').read_text().count('"step": 5'), 'training started'
    assert {p.name: p.read_bytes() for p in ck.iterdir()} == before          # the checkpoint is left as it was


@pytest.mark.parametrize('spelling', ['dot', 'symlink'])
def test_finetune_dev_that_is_the_training_file_is_refused(tmp_path, pretrained, spelling):
    "--dev naming --data's file (spelled with ./ or through a link) is no held-out set: one line, before anything is written."
    data = tmp_path/'train.tsv'
    data.write_text((SHARED/'glue'/'RTE'/'dev.tsv').read_text())
    if spelling == 'dot': dev = f'{tmp_path}/./train.tsv'
    else: (tmp_path/'link.tsv').symlink_to(data); dev = tmp_path/'link.tsv'
    r = atombert('finetune', '--model', pretrained, '--task', 'rte', '--data', data, '--dev', dev, '--max-steps', 2,
                 '--no-progress', '--out', tmp_path/'run')
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'the held-out data is the training data' in r.stderr, r.stderr
    assert not (tmp_path/'run').exists()

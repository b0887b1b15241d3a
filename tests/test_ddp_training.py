"""DDP on CPU (gloo) beyond two processes: finetuning at 1 and 4 processes takes the same steps, every process draws
its own dropout masks, and a 4-process pretraining run killed mid-way resumes to the uninterrupted run's weights."""
import json, signal, subprocess, sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_pretrain_cli import ATOMBERT, ENV, ROOT, VALID, common, tokenizer_dir   # noqa: F401 (a fixture)

TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone']


def torchrun(processes, *args, script=ATOMBERT, env=ENV):
    return subprocess.run([*TORCHRUN, '--nproc_per_node', str(processes), str(script), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT)


def evals(run):
    return [r for r in map(json.loads, (Path(run)/'metrics.jsonl').read_text().splitlines()) if r['split'] == 'eval']


def assert_same_weights(a, b, tol=1e-5):
    a, b = load_file(Path(a)/'model.safetensors'), load_file(Path(b)/'model.safetensors')
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < tol, worst


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory, tokenizer_dir):
    "An untrained tiny model with the module's tokenizer, as `pretrain` would leave one (finetuning mechanics only)."
    from atombert.config import AtomBertConfig
    from atombert.model import AtomBertForPreTraining
    from atombert.tokenizer import load_tokenizer
    d = tmp_path_factory.mktemp('model')
    torch.manual_seed(0)
    AtomBertForPreTraining(AtomBertConfig.preset('tiny', vocab_size=1000)).save_pretrained(d, tokenizer=load_tokenizer(tokenizer_dir))
    return d


def finetune_args(model, out, *extra):
    return ['finetune', '--model', model, '--data', 'builtin', '--out', out, '--max-steps', 6, '--batch-size', 8, '--lr', 1e-3,
            '--dropout', 0, '--precision', 'fp32', '--eval-every', 3, '--no-progress', *extra]


@pytest.mark.parametrize('processes', [2, 4])
def test_finetune_processes_match_one(tmp_path, tiny_model, processes):
    "N processes take one batch each per step; 1 process takes the same N batches as N micro-batches: the same steps."
    one = subprocess.run([ATOMBERT, *map(str, finetune_args(tiny_model, tmp_path/'one', '--grad-accum', processes))],
                         capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert one.returncode == 0, one.stderr
    four = torchrun(processes, *finetune_args(tiny_model, tmp_path/'four'))
    assert four.returncode == 0, four.stderr[-3000:]
    assert_same_weights(tmp_path/'one', tmp_path/'four')
    a, b = evals(tmp_path/'one'), evals(tmp_path/'four')             # held out on every process, summed: the same numbers
    assert [r['step'] for r in a] == [r['step'] for r in b] == [0, 3, 6]
    for x, y in zip(a, b): assert all(abs(x[k] - y[k]) < 1e-5 for k in x if k != 'split'), (x, y)
    trained = [[r for r in map(json.loads, (run/'metrics.jsonl').read_text().splitlines()) if r['split'] == 'train']
               for run in (tmp_path/'one', tmp_path/'four')]                 # the logged training losses: the whole batch's
    assert [r['step'] for r in trained[0]] == [r['step'] for r in trained[1]] and trained[0]
    for x, y in zip(*trained): assert all(abs(x[k] - y[k]) < 1e-5 for k in x if k.endswith(('loss', 'accuracy'))), (x, y)


RNG_SCRIPT = '''
import json, os, sys, torch
from atombert.devices import init_distributed
from atombert.trainer_state import rank_rng_states
rank, world, _ = init_distributed('cpu')
torch.manual_seed(int(sys.argv[1]) + rank)          # as fit seeds each process
states = rank_rng_states(world)                      # every process takes part; rank 0 writes them down
if rank == 0: json.dump([torch.rand(4, generator=torch.Generator().set_state(s['cpu'])).tolist() for s in states], open(sys.argv[2], 'w'))
'''


def test_each_process_its_own_dropout_stream(tmp_path):
    "`rank_rng_states` gathers every process's stream, in rank order: what a checkpoint keeps, and they differ."
    script = tmp_path/'rng.py'; script.write_text(RNG_SCRIPT)
    r = torchrun(3, 5, tmp_path/'draws.json', script=script)
    assert r.returncode == 0, r.stderr[-3000:]
    draws = json.loads((tmp_path/'draws.json').read_text())
    expected = [torch.rand(4, generator=torch.Generator().manual_seed(5 + rank)).tolist() for rank in range(3)]
    assert all(d == pytest.approx(e) for d, e in zip(draws, expected)) and len(draws) == 3, (draws, expected)
    assert draws[0] != pytest.approx(draws[1])


MFU_SCRIPT = '''
import json, sys, torch
import torch.nn.functional as F
import atombert.training as T
from atombert.config import AtomBertConfig
from atombert.model import AtomBertForSequenceClassification
T.peak_flops = lambda device, precision: 1e9                     # each process's device peaks at 1 GFLOP/s
class Counted(T.Task):
    def loss(self, model, b): return {'loss': F.cross_entropy(model(b['input_ids']).logits, b['labels'])}, {}
    def flops(self, model, b): return 1_000_000 * len(b['input_ids'])
torch.manual_seed(0); model = AtomBertForSequenceClassification(AtomBertConfig.preset('tiny', vocab_size=64, num_labels=2))
data = [dict(input_ids=torch.randint(5, 60, (12,)), labels=torch.tensor(i % 2)) for i in range(256)]
collate = lambda rows: {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
T.fit(model, data, collate, Counted(), T.TrainArgs(out_dir=sys.argv[1], max_steps=8, batch_size=16, log_every=4, device='cpu',
                                                   precision='fp32'), progress=False)
'''


def test_mfu_is_against_every_process_s_peak(tmp_path):
    "The FLOPs logged are every process's, so the MFU is against every device's peak: 2 processes log FLOP/s / (2 × peak)."
    script = tmp_path/'mfu.py'; script.write_text(MFU_SCRIPT)
    r = torchrun(2, tmp_path/'run', script=script)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [r for r in map(json.loads, (tmp_path/'run'/'metrics.jsonl').read_text().splitlines()) if r['split'] == 'train']
    assert len(rows) == 2 and all(row['mfu'] == pytest.approx(row['model_tflops'] * 1e12 / 2e9) for row in rows), rows


def test_pretrain_killed_at_four_processes_resumes_exactly(tmp_path, tokenizer_dir):
    "Dropout on, 4 processes: killed in step 9 of 12, resumed from step 8, the weights of the run that was never stopped."
    args = common(tmp_path, '--tokenizer', tokenizer_dir, '--max-steps', 12, '--save-every', 4, '--dropout', 0.1,
                  '--precision', 'fp32')
    straight = torchrun(4, *args, '--out', tmp_path/'straight')
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = torchrun(4, *args, '--out', tmp_path/'killed', script=Path(__file__).parent/'fault_runner.py',
                      env={**ENV, 'ATOMBERT_FAULT': 'kill:loss:9'})                 # every process dies in its 9th step
    assert killed.returncode != 0
    assert sorted(c.name for c in (tmp_path/'killed'/'checkpoints').iterdir()) == ['step-00000004', 'step-00000008']
    resumed = torchrun(4, *args, '--out', tmp_path/'killed', '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # equal to float rounding (DDP rebuilds its gradient buckets after the first step of every start, and with more than two
    # processes the order of the sums then differs: see 06_training); a process that resumed another's dropout
    # stream, or the same stream on every process, is off by orders of magnitude more
    assert_same_weights(tmp_path/'straight', tmp_path/'killed', tol=1e-6)


def test_finetune_killed_at_four_processes_resumes_exactly(tmp_path, tiny_model):
    "The same for finetuning, with classifier and hidden dropout on: killed in step 7 of 10, resumed from step 6."
    # a repeated flag: its last value counts; no held-out evaluation before the kill (its batches call the loss too)
    extra = ('--dropout', 0.1, '--max-steps', 10, '--save-every', 3, '--eval-every', 0)
    straight = torchrun(4, *finetune_args(tiny_model, tmp_path/'straight', *extra))
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = torchrun(4, *finetune_args(tiny_model, tmp_path/'killed', *extra), script=Path(__file__).parent/'fault_runner.py',
                      env={**ENV, 'ATOMBERT_FAULT': 'kill:loss:7'})
    assert killed.returncode != 0
    assert sorted(c.name for c in (tmp_path/'killed'/'checkpoints').iterdir()) == ['step-00000003', 'step-00000006']
    resumed = torchrun(4, *finetune_args(tiny_model, tmp_path/'killed', *extra, '--resume'))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(tmp_path/'straight', tmp_path/'killed', tol=1e-6)

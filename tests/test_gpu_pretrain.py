"""`tools/gpu_pretrain.sh --dry-run`: the seed's GPU job of issue 27 (atombert-8m pretrained on Wikipedia shards, then
finetuned on MNLI beside its untrained twin) run on the CPU at smoke size, so that the one GPU run is spent measuring,
not debugging. It must pass with the JSON, the plot and the weights the GPU run brings back (at most 8 files, each
under 16 MiB, the weights sharded and loadable); data that is missing or not what `prepare` wrote is one line. The dry run
takes its shards as the two-call plan does: one carried with --data, one a `prepare --shards-only` folder (--more-shards)."""
import json, lzma, os, subprocess, sys
from pathlib import Path
import pytest
import torch

pytestmark = pytest.mark.slow(minutes=1)    # whole scripts at smoke size: with `-n 2` these start early
ROOT = Path(__file__).resolve().parents[1]


def prepare(*args):
    return subprocess.run([sys.executable, 'tools/gpu_pretrain.py', 'prepare', *map(str, args)], cwd=ROOT, capture_output=True, text=True)


def gpu_pretrain(*args, **env):
    return subprocess.run(['bash', 'tools/gpu_pretrain.sh', *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, 'PYTHON': sys.executable, **env})


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('gpu_pretrain')
    for args in (('--shards', 1), ('--first-shard', 1, '--shards-only')):
        r = prepare('--small', '--data', tmp/('more' if '--shards-only' in args else 'data'), *args)
        assert r.returncode == 0, r.stderr[-3000:]
    r = gpu_pretrain('--dry-run', '--data', tmp/'data', '--more-shards', tmp/'more', '--work', tmp/'work', OUT=str(tmp/'device_out'))
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-3000:]
    return tmp, json.loads((tmp/'device_out'/'gpu_pretrain.json').read_text())


def test_dry_run_measures_every_phase(dry_run):
    _, rep = dry_run
    assert rep['dry_run'] is True and 'error' not in rep
    assert list(rep['phases']) == ['environment', 'pretokenize', 'pretrain', 'weights', 'model_only_step', 'finetune_pretrained',
                                   'finetune_untrained']            # the weights are out before anything else can fail
    pre = rep['pretraining']
    assert pre['budget']['max_steps'] == pre['steps'] > 0 and pre['budget']['minutes'] == 0.25
    assert pre['args']['num_workers'] == 2                     # the batches are masked off the training process
    assert pre['tokens_per_s'] > 0 and rep['model_only_step']['tokens_per_s'] > 0 and rep['end_to_end_over_model_only'] > 0
    curve = pre['held_out']
    assert curve[0]['step'] == 0 and curve[-1]['step'] == pre['steps'] and all(0 <= r['mlm_accuracy'] <= 1 for r in curve)
    assert curve[-1]['unigram_accuracy'] > 0
    assert rep['pretokenize']['tokens'] == rep['pretraining']['train_tokens']   # pretrain read the cache the phase wrote
    assert rep['more_shards']['used'] and rep['pretokenize']['shards'] == ['part-0.txt.xz', 'part-1.txt.xz']  # carried + staged
    assert any(line.endswith('(1 of them from --more-shards)') for line in rep['log']), rep['log'][-12:]
    for name in ('pretrained', 'untrained'):
        m = rep['mnli'][name]
        assert 0 <= m['matched'] <= 1 and 0 <= m['mismatched'] <= 1 and m['finetune_s'] > 0
    assert rep['data']['mnli']['train'] == 300 and rep['data']['tokenizer']['vocab_size'] == 1000


def test_what_comes_back_fits_and_the_weights_load(dry_run):
    tmp, rep = dry_run
    from atombert.model import AtomBertForPreTraining
    back = [f for f in (tmp/'device_out').rglob('*') if f.is_file()]
    assert len(back) <= 8 and all(f.stat().st_size < 16 * 2 ** 20 for f in back), back
    model_dir = tmp/'device_out'/'model'
    assert (model_dir/'model.safetensors.index.json').exists() and len(list(model_dir.glob('model-*-of-*.safetensors'))) >= 2
    assert not (model_dir/'tokenizer.json').exists()           # the tokenizer travelled from here
    assert rep['weights']['dtype'] == 'bfloat16'                 # rounded, so the full model fits the repository's 20 MB
    shipped, run = AtomBertForPreTraining.from_pretrained(model_dir), AtomBertForPreTraining.from_pretrained(tmp/'work'/'pretrain')
    assert all(torch.equal(a, b.bfloat16().float()) for a, b in zip(shipped.state_dict().values(), run.state_dict().values()))
    started = AtomBertForPreTraining.from_pretrained(tmp/'work'/'pretrained_bf16')   # finetuning's start: the weights shipped
    assert all(torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), started.state_dict().values()))
    assert (tmp/'device_out'/'gpu_pretrain.png').stat().st_size > 10_000


def test_data_that_is_not_what_prepare_wrote_is_one_line(dry_run, tmp_path):
    tmp, _ = dry_run
    r = gpu_pretrain('--data', tmp_path/'nowhere', '--out-dir', tmp_path/'out')
    assert r.returncode == 2 and r.stderr.strip().endswith('manifest.json not found: run `python tools/gpu_pretrain.py prepare` first'), r.stderr[-2000:]
    data = tmp/'data'
    f = data/'mnli_dev_matched.jsonl.xz'; good = f.read_bytes()
    try:
        f.write_bytes(lzma.compress(b'{"premise": "a", "hypothesis": "b", "label": 0}\n'))
        r = gpu_pretrain('--data', data, '--out-dir', tmp_path/'out')
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f'gpu_pretrain: error: {f} is missing or not what `prepare` wrote', r.stderr[-2000:]
    finally: f.write_bytes(good)


def test_prepare_counts_what_travels(dry_run, tmp_path):
    tmp, _ = dry_run
    manifest = json.loads((tmp/'data'/'manifest.json').read_text())
    assert manifest['shards'] == ['part-0.txt.xz'] and set(manifest['files']) >= {
        'shards/part-0.txt.xz', 'tokenizer/tokenizer.json', 'held_out.raw.xz', 'mnli_train.jsonl.xz', 'mnli_dev_mismatched.jsonl.xz'}
    more = json.loads((tmp/'more'/'manifest.json').read_text())        # --shards-only: the shards, nothing else
    assert more['shards'] == ['part-1.txt.xz'] and list(more['files']) == ['shards/part-1.txt.xz']
    r = prepare('--shards', '0')
    assert r.returncode == 2 and r.stderr.strip().endswith('--shards must be >= 1')
    r = prepare('--small', '--first-shard', 2, '--data', tmp_path/'none')
    assert r.returncode == 2 and r.stderr.strip().endswith('has no shard from number 2 on'), r.stderr[-2000:]


def test_more_shards_that_did_not_stay_never_cost_the_run(tmp_path):
    "The default dry run (its own data, two shards) told of a --more-shards folder that is not there: it goes on, and says so."
    r = gpu_pretrain('--dry-run', '--more-shards', tmp_path/'gone', '--work', tmp_path/'work', '--out-dir', tmp_path/'out')
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-3000:]
    rep = json.loads((tmp_path/'out'/'gpu_pretrain.json').read_text())
    assert rep['more_shards']['used'] is False and 'is not on this machine' in rep['more_shards']['why'] and 'is not on this machine' in r.stdout
    assert rep['pretokenize']['shards'] == ['part-0.txt.xz', 'part-1.txt.xz'] and 'error' not in rep


def test_more_shards_not_what_prepare_wrote_are_left_out(dry_run, tmp_path):
    tmp, _ = dry_run
    sys.path.insert(0, str(ROOT/'tools'))
    import gpu_pretrain, shutil
    more = tmp_path/'more'; shutil.copytree(tmp/'more', more)
    assert gpu_pretrain.staged_shards(more)['used'] and gpu_pretrain.staged_shards(None) == dict(used=False, why='no --more-shards')
    (more/'shards'/'part-1.txt.xz').write_bytes(b'cut short')
    assert 'not what `prepare` wrote' in gpu_pretrain.staged_shards(more)['why']


def test_the_full_models_weights_come_back_in_files_under_16_mib_and_fit_the_repository(tmp_path):
    """atombert-8m at 30,000 entries, saved as the job saves it (bf16): config, index and 2 shards, each under the 16 MiB a
    file may carry, and with its tokenizer within the 20 MB the repository may keep."""
    sys.path.insert(0, str(ROOT/'tools'))
    import gpu_pretrain
    from atombert.config import AtomBertConfig
    from atombert.model import AtomBertForPreTraining
    S = gpu_pretrain.FULL
    model = AtomBertForPreTraining(AtomBertConfig.preset(S['preset']).replace(vocab_size=S['vocab_size'])).to(torch.bfloat16)
    model.save_pretrained(tmp_path, max_shard_size=S['shard_limit'])
    files = sorted(tmp_path.iterdir())
    assert len(files) == 4 and all(f.stat().st_size < 16 * 2 ** 20 for f in files), [(f.name, f.stat().st_size) for f in files]
    tokenizer = 700_000        # bytes: the job's 30,000-entry tokenizer.json (prepare's, fingerprint 5a29977ad8d436ac) is 681,526
    assert sum(f.stat().st_size for f in files) + tokenizer <= 20 * 10**6, sum(f.stat().st_size for f in files)


def test_finetuning_past_the_deadline_stops_and_is_still_scored(dry_run):
    "Pretraining that ran long must not cost the main score: finetuning stops at the deadline, saved, scored, marked cut short."
    import time
    tmp, _ = dry_run
    sys.path.insert(0, str(ROOT/'tools'))
    import gpu_pretrain
    train = gpu_pretrain.read_pairs(tmp/'data'/'mnli_train.jsonl.xz')
    dev = {n: gpu_pretrain.read_pairs(tmp/'data'/f'mnli_dev_{n}.jsonl.xz') for n in ('matched', 'mismatched')}
    r = gpu_pretrain.finetuned(tmp/'work'/'pretrain', tmp/'cut_short', train, dev, 'cpu', stop_at=time.perf_counter())
    assert r['cut_short'] and r['steps'] == 1 < r['planned_steps'] and 0 <= r['matched'] <= 1
    assert (tmp/'cut_short'/'model.safetensors').is_file()
    full = json.loads((tmp/'device_out'/'gpu_pretrain.json').read_text())['mnli']['pretrained']
    assert not full['cut_short'] and full['steps'] == full['planned_steps']
    res = dict(phases=dict(finetune_pretrained=1.0), seconds=1.0, mnli=dict(pretrained=r))
    gpu_pretrain.report(res)
    assert any(f"cut short at step 1 of {r['planned_steps']}" in line for line in gpu_pretrain.log.lines)


def test_a_run_too_short_for_a_rate_is_reported_not_a_crash(capsys):
    "A budget that held a single logged step (a dry run on a loaded machine) has no end-to-end rate: the report says so."
    sys.path.insert(0, str(ROOT/'tools'))
    import gpu_pretrain
    res = dict(phases=dict(pretrain=1.0, model_only_step=0.5), seconds=1.5, end_to_end_over_model_only=None,
               pretraining=dict(steps=1, epochs=1, train_tokens=1000, tokens_per_s=None, held_out=[]),
               model_only_step=dict(ms_per_step=30.0, tokens_per_s=30_000, mfu_vs_matmul=0.1))
    gpu_pretrain.report(res)
    out = capsys.readouterr().out
    assert 'no end-to-end rate' in out and 'end to end / model only: n/a' in out and ' 0 tokens/s' not in out


def test_the_job_survives_what_the_gpu_may_do_first(dry_run, tmp_path, monkeypatch):
    """The job's own logic with its heavy phases stubbed: time counts from the shell's start, so pretraining gets what both
    finetunings leave it; DataLoader workers that fail get pretraining run again without them, in the time left; a failed
    model-only step (a diagnostic) is recorded and finetuning goes on; the JSON and the plot are written all the same."""
    import argparse, time
    tmp, _ = dry_run
    sys.path.insert(0, str(ROOT/'tools'))
    import gpu_pretrain as G
    calls = []
    def pretrained(S, shards, data, run, cache, device, minutes):
        calls.append((S['num_workers'], run.name, minutes))
        if S['num_workers']: raise RuntimeError('DataLoader worker (pid 7) is killed by signal: Bus error')
        return dict(steps=3, epochs=1, train_tokens=100, tokens_per_s=10.0, held_out=[]), {}
    def model_only(*a, **k): raise RuntimeError('CUDA error: an illegal memory access')
    monkeypatch.setattr(G, 'pretrained', pretrained); monkeypatch.setattr(G, 'model_only', model_only)
    monkeypatch.setattr(G, 'shipped_weights', lambda run, out, start, limit: {'model.safetensors': 1})
    monkeypatch.setattr(G, 'untrained_twin', lambda run, out: out)
    monkeypatch.setattr(G, 'finetuned', lambda *a, **k: dict(matched=0.5, mismatched=0.5, finetune_s=1.0, evaluate_s=0.1, steps=2,
                                                             planned_steps=2, cut_short=False))
    monkeypatch.setenv('GPU_JOB_START', str(time.time() - 200))            # pip and imports took 200 s
    args = argparse.Namespace(dry_run=True, num_workers=None, out_dir=str(tmp_path/'out'), work=str(tmp_path/'work'), data=str(tmp/'data'),
                              more_shards=None, pretrain_minutes=4.5, deadline_minutes=9.0)
    args.manifest = G.checked_data(tmp/'data')
    res = G.job(args)
    assert 'error' not in res, res.get('traceback')
    assert res['startup_s'] >= 200
    left = (9 * 60 - 200 - G.FINETUNE_RESERVE_S) / 60                       # < 4.5: pretokenizing's seconds come off it too
    (workers, first_run, first_minutes), (no_workers, second_run, second_minutes) = calls
    assert (workers, no_workers, first_run, second_run) == (2, 0, 'pretrain', 'pretrain_no_workers')
    assert first_minutes < left and second_minutes <= first_minutes and res['pretrain_minutes_used'] == second_minutes
    assert 'Bus error' in res['pretrain_retry']['error']
    assert 'illegal memory access' in res['model_only_step']['error'] and set(res['mnli']) == {'pretrained', 'untrained'}
    assert json.loads((tmp_path/'out'/'gpu_pretrain.json').read_text())['pretrain_retry'] == res['pretrain_retry']
    assert (tmp_path/'out'/'gpu_pretrain.png').is_file()                    # drawn after each phase, not only at the end
    G.report(res)
    assert any('model-only step: failed' in line for line in G.log.lines)


def adopt(*args):
    return subprocess.run([sys.executable, 'tools/gpu_pretrain.py', 'adopt', *map(str, args)], cwd=ROOT, capture_output=True, text=True)


def test_adopt_keeps_the_model_with_its_tokenizer_and_a_card(dry_run, tmp_path):
    "What came back, made into what the repository keeps: the study's JSON and plot, the model with its tokenizer and card."
    tmp, rep = dry_run
    from atombert.model import AtomBertForPreTraining
    from atombert.tokenizer import load_tokenizer, save_tokenizer, tokenizer_fingerprint, train_tokenizer
    model_dir = tmp_path/'models'/'dry'
    keep = lambda *a: adopt('--from', tmp/'device_out', '--name', 'dry_study', '--to', tmp_path/'studies', '--model-dir', model_dir, *a)
    r = keep('--data', tmp/'data')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path/'studies'/'dry_study.json').read_bytes() == (tmp/'device_out'/'gpu_pretrain.json').read_bytes()
    assert (tmp_path/'studies'/'dry_study.png').stat().st_size > 10_000
    shipped, kept = AtomBertForPreTraining.from_pretrained(tmp/'device_out'/'model'), AtomBertForPreTraining.from_pretrained(model_dir)
    assert all(torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), kept.state_dict().values()))
    assert tokenizer_fingerprint(load_tokenizer(model_dir)) == rep['data']['tokenizer']['fingerprint']   # the one it trained with
    card = (model_dir/'README.md').read_text()
    assert card.startswith('---\nlibrary_name: transformers\n') and 'datasets:' not in card and "\n---\n\n# tiny pretrained on WikiText-2 test's small shards" in card and 'A dry run on the CPU' in card
    m = rep['mnli']['pretrained']
    assert f"| pretrained | {100 * m['matched']:.2f}% | {100 * m['mismatched']:.2f}% |" in card, card
    assert f"{kept.config.vocab_size:,}-entry WordPiece" in card and f"{rep['pretraining']['steps']:,} steps" in card
    assert json.loads((model_dir/'config.json').read_text())['model_type'] == 'albert'   # so the card's transformers lines work
    from transformers import AlbertForMaskedLM, AutoTokenizer
    assert f"AlbertForMaskedLM.from_pretrained('{model_dir.as_posix()}')" in card
    hf, hf_tok = AlbertForMaskedLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    ids = torch.tensor([hf_tok('the cat sat on the mat')['input_ids']])
    with torch.no_grad(): assert hf(ids).logits.shape == (1, ids.shape[1], kept.config.vocab_size)
    made = {f.name: f.read_bytes() for f in model_dir.iterdir()}
    studies = {f.name: f.read_bytes() for f in (tmp_path/'studies').iterdir()}
    # bad input is one line, and the model kept before is untouched
    other = tmp_path/'other'; save_tokenizer(train_tokenizer(['a fish swam in the sea'] * 20, vocab_size=60, show_progress=False), other/'tokenizer')
    for args, says in [(('--data', other), f"{other}/tokenizer is tokenizer "),
                       (('--data', tmp/'more'), f"{tmp/'more'}/tokenizer has no tokenizer.json: give --data the folder that travelled")]:
        r = keep(*args)
        assert r.returncode == 2 and r.stderr.count('\n') == 1 and says in r.stderr, r.stderr[-2000:]
    import shutil
    damaged = tmp_path/'damaged'; shutil.copytree(tmp/'device_out', damaged)
    shard = sorted((damaged/'model').glob('model-*.safetensors'))[-1]; shard.write_bytes(shard.read_bytes()[:-10])
    bad_json = tmp_path/'bad_json'; shutil.copytree(tmp/'device_out', bad_json); (bad_json/'gpu_pretrain.json').write_text('{"job": "gpu')
    for source, says in [(tmp_path/'nowhere', 'gpu_pretrain.json not found: give --from the folder the device call brought back'),
                         (bad_json, 'gpu_pretrain.json is not what a gpu_pretrain run writes (JSONDecodeError'),
                         (damaged, f'{damaged}/model does not load: ')]:     # found once the new directory is built aside
        r = adopt('--from', source, '--data', tmp/'data', '--name', 'dry_study', '--to', tmp_path/'studies', '--model-dir', model_dir)
        assert r.returncode == 2 and r.stderr.count('\n') == 1 and says in r.stderr, r.stderr[-2000:]
    assert {f.name: f.read_bytes() for f in model_dir.iterdir()} == made and not list(model_dir.parent.glob('.*'))
    assert {f.name: f.read_bytes() for f in (tmp_path/'studies').iterdir()} == studies          # the study untouched too
    no_plot = tmp_path/'no_plot'; shutil.copytree(tmp/'device_out', no_plot); (no_plot/'gpu_pretrain.png').unlink()
    r = adopt('--from', no_plot, '--data', tmp/'data', '--name', 'redrawn', '--to', tmp_path/'studies', '--model-dir', tmp_path/'m2')
    assert r.returncode == 0 and (tmp_path/'studies'/'redrawn.png').stat().st_size > 10_000, r.stderr[-2000:]   # drawn from the JSON

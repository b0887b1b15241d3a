"Smoke test of the benchmark scripts in bench/: each runs at its --small size and writes valid JSON (no thresholds on time)."
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest

pytestmark = pytest.mark.slow(minutes=1)    # whole scripts at smoke size: with `-n 2` these start early
ROOT = Path(__file__).resolve().parents[1]

def run_bench(script, out, *extra):
    r = subprocess.run([sys.executable, f'bench/{script}', '--small', '--threads', '2', '--device', 'cpu', '--out', str(out), *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f'{script} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}'
    return r.stdout, json.loads(Path(out).read_text())

def refused(script, tmp_path, *argv) -> str:
    "Run `script` on bad input: it must fail with one clear error line, no traceback and no JSON written; that line."
    out = tmp_path/'refused.json'
    r = subprocess.run([sys.executable, f'bench/{script}', *argv, '--out', str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and 'Traceback' not in r.stderr and not out.exists(), (r.returncode, r.stderr[-2000:])
    return r.stderr.strip().splitlines()[-1]

def check_machine(res):
    assert {'cpu', 'torch', 'transformers', 'torch_threads'} <= set(res['machine'])
    assert res['machine']['torch_threads'] == 2

def test_pretrain_step(tmp_path):
    out, res = run_bench('pretrain_step.py', tmp_path/'pretrain_step.json')
    assert 'tokens/s' in out and 'atombert' in out and 'transformers' in out
    assert res['benchmark'] == 'pretrain_step' and res['args']['preset'] == 'tiny'
    check_machine(res)
    assert set(res['contenders']) == {'atombert', 'transformers'}
    for c in res['contenders'].values():
        assert {'tokens_per_s', 'ms_per_step', 'peak_mb', 'model_mb', 'mfu', 'flops_per_step', 'loss'} <= set(c)
        assert c['tokens_per_s'] > 0 and c['peak_mb'] is not None and len(c['ms_all']) == 2
    # same config and weights: the same loss on the same batch
    assert res['contenders']['atombert']['loss'] == pytest.approx(res['contenders']['transformers']['loss'], abs=1e-4)
    assert {'ratio', 'paired_ratio', 'mfu', 'matmul', 'flops', 'batch', 'config'} <= set(res)
    f = res['flops']
    assert f['formula_train_step'] > 0 and 0.9 < f['counter_over_formula'] < 1.1   # the formula counts what runs
    # transformers computes MLM logits at every position: more FLOPs than atombert on the same batch
    assert f['transformers_formula_train_step'] > f['formula_train_step']
    assert res['matmul']['flops_per_s'] > 0

def test_pretrain_step_rtd(tmp_path):
    "The ELECTRA step timed in the same rounds as the MLM step: its tokens/s and the paired ratio."
    out, res = run_bench('pretrain_step.py', tmp_path/'rtd.json', '--rtd', '--no-memory')
    assert 'atombert RTD step (generator 0.25' in out
    r = res['rtd']
    assert r['tokens_per_s'] > 0 and len(r['ms_all']) == 2 and r['mlm_step_over_rtd_step'] > 0
    assert set(res['contenders']) == {'atombert', 'transformers'}

def test_pretrain_step_mixed_precision(tmp_path):
    "atombert under bf16 autocast against transformers in fp32: each contender records its own precision."
    out, res = run_bench('pretrain_step.py', tmp_path/'mixed.json', '--atombert-precision', 'bf16', '--no-memory')
    assert 'atombert bf16, transformers fp32' in out
    a, t = res['contenders']['atombert'], res['contenders']['transformers']
    assert (a['precision'], t['precision']) == ('bf16', 'fp32') and res['matmul']['dtype'] == 'float32'
    assert a['mfu'] is None and t['mfu'] > 0            # MFU only against a probe of the contender's own precision
    assert res['meets_targets']['mfu'] is None and res['ratio'] > 0
    assert a['loss'] == pytest.approx(t['loss'], rel=2e-2)   # bf16 autocast: the same loss to bf16 precision

def test_inference(tmp_path):
    out, res = run_bench('inference.py', tmp_path/'inference.json')
    assert 'tokens/s' in out and 'int8' in out
    assert res['benchmark'] == 'inference'
    check_machine(res)
    assert set(res['contenders']) == {'atombert', 'transformers', 'atombert_int8'}
    for c in res['contenders'].values():
        assert {'tokens_per_s', 'ms_per_batch', 'peak_mb', 'ratio_vs_transformers'} <= set(c) and c['tokens_per_s'] > 0
    a = res['agreement']
    assert a['transformers_vs_atombert']['last_hidden_state']['max_abs_diff'] < 1e-4   # same model in float32
    assert a['int8_vs_fp32']['pooler_output']['cosine_min'] > 0.9                        # int8 stays close
    assert res['int8_ratio'] > 0 and res['quantization']['dtype'] == 'qint8' and res['baseline'] == 'transformers float32'

def test_inference_in_bf16_says_what_its_ratios_are_against(tmp_path):
    "Under --precision bf16 transformers runs in bf16 too: the ratios say so, and the float32 targets are not judged against it."
    out, res = run_bench('inference.py', tmp_path/'inference.json', '--precision', 'bf16', '--no-memory')
    assert res['baseline'] == 'transformers bf16' and res['int8_gap_to_target'] is None
    assert 'int8: ' in out and 'transformers bf16' in out and 'not judged' in out and 'float32 (matmul' not in out

def test_memory_baseline_holds_every_contenders_code():
    "transformers imports its ALBERT code on first use: it belongs in the baseline, not in that contender's memory."
    code = ("import sys; sys.path.insert(0, 'bench'); import importlib, common as C; "
            "print(C.measure_memory(lambda: importlib.import_module('transformers.models.albert.modeling_albert'), lambda m: None, 'cpu')['model_mb'])")
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert float(r.stdout.split()[-1]) < 20, r.stdout       # importing it alone is ≈ 140 MB of resident code

def test_matmul(tmp_path):
    out, res = run_bench('matmul.py', tmp_path/'matmul.json')
    assert 'GFLOP/s' in out
    assert res['benchmark'] == 'matmul' and res['matmul']['n'] == 512 and res['matmul']['flops_per_s'] > 0
    f = res['flops']
    assert set(f['formula_forward']) >= {'qkv', 'attention_scores', 'ffn', 'mlm_decoder', 'pooler'}
    assert f['formula_train_step'] == 3 * f['formula_forward_total']
    assert 0.9 < f['counter_over_formula'] < 1.1

def test_finetune_epoch(tmp_path):
    out, res = run_bench('finetune_epoch.py', tmp_path/'finetune_epoch.json')
    assert 'padded tokens/epoch' in out and 'bucketed' in out and 'fixed' in out
    assert res['benchmark'] == 'finetune_epoch' and res['args']['preset'] == 'tiny'
    check_machine(res)
    v = res['variants']
    assert set(v) == {'bucketed', 'dynamic', 'fixed'}
    for r in v.values():
        assert {'padded_tokens_per_epoch', 'real_tokens_per_epoch', 'ms_per_step', 'steps_per_s', 'epoch_seconds',
                'full_mnli_epoch_seconds', 'time_ratio_vs_bucketed', 'token_ratio_vs_bucketed'} <= set(r)
        assert r['timed_steps'] == 2 * 2 and len(r['ms_all']) == 2 and r['epoch_seconds'] > 0
        assert r['examples_per_epoch'] == res['data']['examples'] == 20000             # every variant covers the same examples
        assert r['real_tokens_per_epoch'] == v['bucketed']['real_tokens_per_epoch']
        assert r['full_mnli_epoch_seconds'] > r['epoch_seconds']
    # counted, not timed: fixed padding pads every row to --seq-len, bucketing pads least
    assert v['fixed']['padded_tokens_per_epoch'] == 20000 * res['args']['seq_len']
    assert v['bucketed']['padded_tokens_per_epoch'] <= v['dynamic']['padded_tokens_per_epoch'] <= v['fixed']['padded_tokens_per_epoch']
    assert res['token_efficiency_ratio'] == pytest.approx(v['fixed']['token_ratio_vs_bucketed']) and res['token_efficiency_ratio'] >= 1
    assert {'time_ratio', 'paired_time_ratio', 'normalized_time_ratio'} <= set(res) and res['time_ratio'] > 0
    assert [len(r) for r in v['fixed']['padded_tokens_timed']] == [len(r) for r in v['fixed']['ms_all']] and 'ms_per_step' in res['step_cost_fit']

def test_int8_mnli(tmp_path):
    out, res = run_bench('int8_mnli.py', tmp_path/'int8_mnli.json')
    assert 'int8' in out and 'agreement' in out and 'points' in out
    assert res['benchmark'] == 'int8_mnli' and res['recipe']['preset'] == 'tiny'
    check_machine(res)
    assert set(res['splits']) == {'validation_matched', 'validation_mismatched'}
    for r in res['splits'].values():
        assert r['n'] == 200 and 0 <= r['accuracy_fp32'] <= 1 and 0 <= r['accuracy_int8'] <= 1 and 0 <= r['agreement'] <= 1
        assert r['difference_points'] == pytest.approx((r['accuracy_int8'] - r['accuracy_fp32']) * 100)
        # the predictions that differ are exactly where only one of the two is right, or both are wrong differently
        assert r['only_fp32_right'] + r['only_int8_right'] <= round((1 - r['agreement']) * r['n'])
    assert set(res['speed']) == {'fp32', 'int8'} and all(s['tokens_per_s'] > 0 for s in res['speed'].values())
    assert res['quantization']['dtype'] == 'qint8' and isinstance(res['target_met'], bool)

def test_int8_mnli_on_the_shared_mnli_folder(tmp_path):
    "--data naming the shared MNLI folder (two train files beside each other) trains on its 20k sample, as by default."
    _, res = run_bench('int8_mnli.py', tmp_path/'int8_mnli.json', '--data', str(Path(os.environ.get('ATOMBERT_SHARED_DATA', ROOT.parent/'shared'/'data'))/'mnli'))
    assert res['recipe']['preset'] == 'tiny' and set(res['splits']) == {'validation_matched', 'validation_mismatched'}

def test_int8_mnli_model_must_exist(tmp_path):
    assert 'no such directory' in refused('int8_mnli.py', tmp_path, '--model', str(tmp_path/'nothing'))

def test_bad_argument_is_one_clear_error(tmp_path):
    assert 'must be > 0' in refused('pretrain_step.py', tmp_path, '--seq-len', '0')

def test_pretrain_recipe(tmp_path):
    "Two recipes at the smoke budget: the same held-out tokens for both, so the same unigram references; the curve and the plot."
    out, res = run_bench('pretrain_recipe.py', tmp_path/'recipe.json', '--work', str(tmp_path/'work'))
    assert 'most frequent token' in out and 'nats under unigram' in out
    assert res['benchmark'] == 'pretrain_recipe' and res['args']['preset'] == 'tiny'
    assert [r['recipe'] for r in res['results']] == ['base', 'mask30-single']
    base, other = res['results']
    assert base['final']['unigram_loss'] == pytest.approx(other['final']['unigram_loss'])        # same masked tokens
    assert base['final']['unigram_accuracy'] == pytest.approx(other['final']['unigram_accuracy'])
    assert other['kwargs']['mlm_probability'] == 0.3 and other['kwargs']['ngram'] == 1
    for r in res['results']:
        assert r['steps'] > 0 and r['curve'][0]['step'] == 0 and r['curve'][-1]['step'] == r['steps']
        assert r['accuracy_over_unigram'] == pytest.approx(r['final']['mlm_accuracy'] / r['final']['unigram_accuracy'])
    assert Path(res['plot']).stat().st_size > 0 and res['best'] in ('base', 'mask30-single')

def test_pretrain_recipe_on_a_corpus_resumes(tmp_path):
    "--corpus takes any corpus pretrain reads (here an xz shard); a rerun reuses the finished recipes instead of training them again."
    import lzma
    shard = tmp_path/'shards'/'part-0.txt.xz'; shard.parent.mkdir()
    shard.write_bytes(lzma.compress((ROOT.parent/'shared'/'data'/'wikitext'/'wikitext-2-raw'/'wiki.test.raw').read_bytes()))
    argv = ('--work', str(tmp_path/'work'), '--corpus', str(shard.parent), '--recipes', 'base,no-sharing')
    out, res = run_bench('pretrain_recipe.py', tmp_path/'first.json', *argv)
    assert res['corpus']['train'] == str(shard.parent) and [r['recipe'] for r in res['results']] == ['base', 'no-sharing']
    assert res['results'][1]['kwargs']['config_overrides'] == {'norm': 'pre', 'initializer_range': 0.05, 'sharing': 'none'}
    weights = tmp_path/'work'/'base'/'model.safetensors'
    before = weights.stat().st_mtime_ns
    _, again = run_bench('pretrain_recipe.py', tmp_path/'again.json', *argv)
    assert weights.stat().st_mtime_ns == before                                   # not trained again
    assert [r['final'] for r in again['results']] == [r['final'] for r in res['results']]

def test_pretrain_recipe_rtd(tmp_path):
    "ELECTRA recipes: the discriminator's held-out statistics in the table and the JSON."
    out, res = run_bench('pretrain_recipe.py', tmp_path/'rtd.json', '--work', str(tmp_path/'work'), '--recipes', 'rtd,rtd-single')
    assert 'RTD acc' in out and '"never replaced"' in out and 'replaced caught' in out
    for r in res['results']:
        assert r['kwargs']['token_objective'] == 'rtd' and {'rtd_accuracy', 'replaced', 'replaced_recall'} <= set(r['final'])
    assert [r['kwargs']['ngram'] for r in res['results']] == [3, 1]

def test_pretrain_recipe_unknown_recipe(tmp_path):
    assert "unknown recipe(s) ['nope']" in refused('pretrain_recipe.py', tmp_path, '--recipes', 'base,nope')

def test_transfer(tmp_path):
    "The smoke study: bag of words, an untrained row and two pretrained budgets from one run, dev accuracies in [0, 1]."
    out, res = run_bench('transfer.py', tmp_path/'transfer.json', '--work', str(tmp_path/'work'))
    assert 'bag of words' in out and 'dev matched' in out
    assert res['benchmark'] == 'transfer' and res['args']['preset'] == 'tiny' and res['data']['train_examples'] == 300
    assert [r['model'] for r in res['rows']] == ['untrained', 'pretrained 10 steps', 'pretrained 20 steps']
    assert [b['step'] for b in res['pretraining']['budgets']] == [10, 20]
    for r in res['rows']:
        for split in ('matched', 'mismatched'):
            assert 0 <= r['summary'][split]['mean'] <= 1 and len(r['runs']) == 1
    assert 0.2 < res['bag_of_words']['matched'] < 0.8 and res['bag_of_words']['features'] > 100
    assert res['best_lr'] == 1e-3 and set(res['gain_over_untrained_points']) == {'pretrained 10 steps', 'pretrained 20 steps'}
    assert Path(res['plot']).stat().st_size > 0
    # ELECTRA at a wall-clock budget, in the same work folder: its own run and rows, the untrained rows reused
    out, rtd = run_bench('transfer.py', tmp_path/'rtd.json', '--work', str(tmp_path/'work'), '--token-objective', 'rtd',
                         '--pretrain-minutes', '0.05')
    assert rtd['token_objective'] == 'rtd' and 's per step' in out
    assert rtd['pretraining']['probe_seconds_per_step'] > 0 and rtd['pretraining']['run_json']['token_objective'] == 'rtd'
    assert [r['model'] for r in rtd['rows']][0] == 'untrained' and all('(RTD)' in r['model'] for r in rtd['rows'][1:])
    assert rtd['rows'][0]['runs'] == res['rows'][0]['runs']                       # the same untrained model, not finetuned again
    # the same --work with another finetuning batch: its finetunings are other pieces, refused rather than mixed in
    line = refused('transfer.py', tmp_path, '--small', '--threads', '2', '--device', 'cpu', '--work', str(tmp_path/'work'),
                   '--finetune-batch-size', '4')
    assert 'was made with other settings (finetune): give another --work, or remove it' in line, line

def test_finetune_recipe(tmp_path):
    "One knob at a time, both models: every variant finetunes both, changes only its knob, and the default is reused."
    out, res = run_bench('finetune_recipe.py', tmp_path/'recipe.json', '--work', str(tmp_path/'work'), '--variants', 'dropout 0,batch 64')
    assert res['benchmark'] == 'finetune_recipe' and res['data']['train_examples'] == 300 and 'gain (points)' in out
    assert [(r['variant'], r['model']) for r in res['rows']] == [(v, m) for v in ('default', 'dropout 0', 'batch 64')
                                                                 for m in ('untrained', 'pretrained')]
    default = res['default_recipe']
    assert default == dict(epochs=1.0, batch_size=32, warmup=0.1, dropout=None, freeze_embeddings=False)   # finetune's, 1 epoch at smoke size
    by = {(r['variant'], r['model']): r for r in res['rows']}
    assert by['dropout 0', 'untrained']['recipe'] == default | dict(dropout=0.0)
    assert by['batch 64', 'pretrained']['recipe'] == default | dict(batch_size=64)
    assert all(0 <= r[s] <= 1 for r in res['rows'] for s in ('matched', 'mismatched'))
    assert Path(res['plot']).stat().st_size > 0
    # a rerun finetunes nothing again: every result comes from the work folder
    out, again = run_bench('finetune_recipe.py', tmp_path/'again.json', '--work', str(tmp_path/'work'), '--variants', 'dropout 0,batch 64')
    assert again['rows'] == res['rows']
    start = res['starting_point']                 # what the new classifier sees, before finetuning
    assert set(start) == {'untrained', 'pretrained'} and all(s['pairs'] == 64 and -1 <= s['cls_cosine'] <= 1 and s['cls_spread'] > 0
                                                             and 0 <= s['pooled_saturated'] <= 1 for s in start.values())
    probe = res['frozen_probe']                   # a logistic regression on the frozen features, per model, feature and dev set
    assert set(probe) == {'untrained', 'pretrained'} and all(0 <= a <= 1 for p in probe.values() for kind in ('cls', 'mean')
                                                             for a in (p[kind]['matched'], p[kind]['mismatched']))
    # any pretraining run's model and its untrained twin, on wiki_transfer's pairs; a new pooler for the pretrained one only
    run = Path(res['pretraining']['run'])
    out, wiki = run_bench('finetune_recipe.py', tmp_path/'wiki.json', '--work', str(tmp_path/'work2'), '--pretrained', str(run),
                          '--variants', 'new pooler,lr 1e-3,max length 64')
    by = {(r['variant'], r['model']): r for r in wiki['rows']}
    assert list(by) == [(v, m) for v in ('default', 'new pooler', 'lr 1e-3', 'max length 64') for m in ('untrained', 'pretrained')]
    assert by['lr 1e-3', 'pretrained']['recipe'] == by['default', 'pretrained']['recipe'] | dict(lr=1e-3) and by['lr 1e-3', 'pretrained']['lr'] == 1e-3
    assert by['new pooler', 'untrained']['matched'] == by['default', 'untrained']['matched']     # its pooler is new already: the same run
    assert wiki['pretraining']['steps'] == res['pretraining']['steps'] > 0                     # the run's final model: finetuned apart from the untrained one
    assert wiki['pretraining']['seq_len'] == 64 and 0 < wiki['pretraining']['train_pairs_longer'] <= 1
    assert (tmp_path/'work2'/f"step-{wiki['pretraining']['steps']}-new-pooler"/'model.safetensors').is_file()
    short = sorted((tmp_path/'work2'/'finetuned').glob('*-max-length-64'))      # finetuned on 64-token pairs, and scored on them
    assert len(short) == 2 and all(json.loads((f/'tokenizer.json').read_text())['truncation']['max_length'] == 64 for f in short)
    assert wiki['data']['train_examples'] == 300 and set(wiki['starting_point']) == {'untrained', 'pretrained'}

def test_finetune_recipe_unknown_variant(tmp_path):
    assert "unknown --variants ['nope']" in refused('finetune_recipe.py', tmp_path, '--variants', 'epochs 2,nope')

def test_study_corpus_layouts(tmp_path):
    "The MNLI sample in the studies' pretraining text: unpaired texts, or each premise with its hypothesis on one line."
    sys.path.insert(0, str(ROOT/'bench'))
    import common
    from atombert.mnli import load_mnli
    train = load_mnli(str(common.shared_path(common.MNLI_TRAIN_SAMPLE)), 'train', verbose=False)
    p, h = train[0]['premise'].strip(), train[0]['hypothesis'].strip()
    folder, held_out = common.study_corpus(tmp_path/'a')
    lines = set((folder/'mnli_train_sample_text_16.txt').read_text().splitlines())
    assert p in lines and h in lines and f'{p} {h}' not in lines
    folder, _ = common.study_corpus(tmp_path/'b', layout='pairs')
    assert [f.name for f in sorted(folder.iterdir())] == ['mnli_train_sample_pairs_16.txt', 'wiki.test.raw']
    lines = set((folder/'mnli_train_sample_pairs_16.txt').read_text().splitlines())
    assert f'{p} {h}' in lines and p not in lines
    assert held_out.name == 'wiki.valid.raw'
    with pytest.raises(ValueError, match="layout='both'"): common.study_corpus(tmp_path/'c', layout='both')

def test_label_budget(tmp_path):
    "Both models at every number of pairs, bag of words beside them, epochs raised to the least steps; a rerun reuses all."
    out, res = run_bench('label_budget.py', tmp_path/'lb.json', '--work', str(tmp_path/'work'))
    assert res['benchmark'] == 'label_budget' and 'gain (points)' in out and 'labelled pairs' in out
    assert [(r['pairs'], r['model'], r['seed']) for r in res['rows']] == [(n, m, 0) for n in (100, 300) for m in ('untrained', 'pretrained')]
    assert {r['pairs']: r['epochs'] for r in res['rows']} == {100: 5.0, 300: 3.0}    # 100 pairs: 4 steps an epoch, 20 at least
    assert [r['pretrain_steps'] for r in res['rows'][:2]] == [0, 20]
    assert set(res['bag_of_words']) == {'100', '300'} and all(0 <= b[s] <= 1 for b in res['bag_of_words'].values() for s in ('matched', 'mismatched'))
    assert all(0 <= r[s] <= 1 for r in res['rows'] for s in ('matched', 'mismatched')) and 0 < res['majority']['matched'] < 1
    assert [t['pairs'] for t in res['table']] == [100, 300] and Path(res['plot']).stat().st_size > 0
    out, again = run_bench('label_budget.py', tmp_path/'again.json', '--work', str(tmp_path/'work'))
    assert again['rows'] == res['rows']
    out, lr = run_bench('label_budget.py', tmp_path/'lr.json', '--work', str(tmp_path/'work'), '--lr', '2e-3')
    assert lr['lr'] == 2e-3 != res['lr'] and len(lr['rows']) == 4 and all(r['lr'] == 2e-3 for r in lr['rows'])

def test_label_budget_epochs():
    sys.path.insert(0, str(ROOT/'bench'))
    from label_budget import epochs_for, majority_share
    default = dict(epochs=3, batch_size=32)
    assert epochs_for(20_000, 470, default) == epochs_for(5_000, 470, default) == 3.0          # 3 epochs make 470 steps or more
    assert epochs_for(1_000, 470, default) == 14.7 and 14.7 * 32 >= 470                         # 32 steps an epoch
    assert epochs_for(1_000, 0, default) == 3.0
    assert majority_share([0, 1, 1, 2]) == 0.5

def test_data_prep(tmp_path):
    "Reading, tokenizer training and pretokenizing timed apart in fresh processes, the tokenizers pool off and on, scaled to WikiText-103."
    out, res = run_bench('data_prep.py', tmp_path/'dp.json')
    assert res['benchmark'] == 'data_prep' and 'WT-103 min' in out and 'the pool on / off' in out
    assert [r['setting'] for r in res['rows']] == ['threads off', 'threads on']
    assert [r['tokenizers_parallelism'] for r in res['rows']] == ['false', 'true']
    a, b = res['rows']
    # two processes train two tokenizers, which may differ in a few entries (huggingface/tokenizers#1794)
    assert min(a['tokens'], b['tokens']) > 100_000 and abs(a['tokens'] - b['tokens']) < 0.01 * a['tokens']
    assert a['vocab_learned'] <= 1000 and a['documents'] == b['documents'] > 0
    for r in res['rows']:
        assert r['tokenizer_training_s'] > 0 and r['pretokenize_s'] > 0
        scale = res['wikitext103_tokens'] / r['tokens']
        assert abs(r['wikitext103_min'] - (r['tokenizer_training_s'] + r['pretokenize_s']) * scale / 60) < 1e-6

def test_data_prep_bad_input(tmp_path):
    assert refused('data_prep.py', tmp_path, '--corpus', str(tmp_path/'missing.txt')).startswith('error: --corpus')

def test_tokenizer_repro(tmp_path):
    "Each way of training in fresh processes: train_tokenizer's WordPiece gives one tokenizer, ids and all; the table and JSON say so."
    out, res = run_bench('tokenizer_repro.py', tmp_path/'tr.json')
    assert res['benchmark'] == 'tokenizer_repro' and 'id maps' in out and '× its time' in out
    rows = {r['way']: r for r in res['rows']}
    assert list(rows) == ['trainer alone', 'train_tokenizer', 'train_tokenizer unigram']
    wordpiece, unigram = rows['train_tokenizer'], rows['train_tokenizer unigram']
    assert wordpiece['distinct_id_maps'] == wordpiece['distinct_token_sets'] == 1 and wordpiece['ids_moved_max'] == 0
    assert all(r['runs'] == 2 and len(r['seconds']) == 2 and min(r['seconds']) > 0 and 100 < r['entries'] <= 1000 for r in rows.values())
    assert unigram['largest_score_difference'] is not None and rows['trainer alone']['largest_score_difference'] is None
    assert len(wordpiece['only_here_vs_alone']) == 2 and wordpiece['time_ratio_vs_alone'] > 0 and 'time_ratio_vs_alone' not in unigram

def test_tokenizer_repro_bad_input(tmp_path):
    assert refused('tokenizer_repro.py', tmp_path, '--corpus', str(tmp_path/'missing.txt')).startswith('error: --corpus')
    assert refused('tokenizer_repro.py', tmp_path, '--runs', '1').startswith('error: --runs must be >= 2')

def test_corpus_prep(tmp_path):
    "Tokenizer training and pretokenizing on compressed shards, one shard and all, each phase in a fresh process with its peak RSS."
    out, res = run_bench('corpus_prep.py', tmp_path/'cp.json', '--num-proc', '1,2')
    assert res['benchmark'] == 'corpus_prep' and 'pretokenize tok/s' in out and 'shares' in out
    one, both = res['rows']
    assert (one['corpus'], both['corpus'], one['shards'], both['shards']) == ('1 shard', '2 shards', 1, 2)
    assert 0 < one['tokens'] < both['tokens'] and both['documents'] > one['documents']
    for r in res['rows']:
        assert r['tokenizer_s'] > 0 and r['pretokenize_s'] > 0 and r['tokenizer_peak_rss_mb'] > 50 and r['pretokenize_peak_rss_mb'] > 50
        assert abs(r['pretokenize_tokens_per_s'] - r['tokens'] / r['pretokenize_s']) < 1e-6 * r['pretokenize_tokens_per_s']
        assert r['vocab_learned'] <= 1000 and 1 < r['held_out_tokens_per_word'] < 3
        runs = r['pretokenize_by_processes']          # 1 process and 2, side by side: the same memmap (checked by the script)
        assert [x['processes'] for x in runs] == [1, 2] and r['pretokenize_s'] == runs[-1]['seconds'] and len(r['tokens_sha256']) == 64
        assert r['pretokenize_speedup'] == runs[0]['seconds'] / runs[1]['seconds']
    assert 0 < res['vocabulary']['shared_entries'] <= 1000

def test_wiki_transfer(tmp_path):
    "The study at smoke size: budgeted pretraining on compressed shards, a control corpus, finetuned rows, bag of words, fewer labels."
    study = lambda out: run_bench('wiki_transfer.py', out, '--work', str(tmp_path/'work'), '--tokenizer', 'bench/studies/wiki_tokenizer')
    out, res = study(tmp_path/'wt.json')
    assert res['benchmark'] == 'wiki_transfer' and 'bag of words' in out and res['data']['train_examples'] == 300
    wiki = res['wikipedia']
    assert wiki['budget']['minutes'] == 0.25 and wiki['budget']['max_steps'] == wiki['checkpoints'][-1]['step']
    assert [r['corpus'] for r in res['rows']] == [None, 'wikipedia', 'wikipedia', 'control'] and res['complete']   # the question first, its control last
    assert all(0 <= r['summary']['matched']['mean'] <= 1 for r in res['rows'])
    assert [l['pairs'] for l in res['labels']] == [100, 300] and Path(res['plot']).stat().st_size > 0
    assert wiki['curve'][-1]['mlm_accuracy'] > wiki['curve'][0]['mlm_accuracy']     # it learned something on the shards
    # a rerun reuses every finished piece: no pretraining, no finetuning
    out2, res2 = study(tmp_path/'wt2.json')
    assert res2['rows'] == res['rows'] and res2['wikipedia']['budget'] == wiki['budget']
    # a new machine: the runs are gone, the JSON is kept; only the missing row is measured, on a pretraining run redone
    # step for step (the recorded step count, no new probe) as far as its checkpoint
    shutil.rmtree(tmp_path/'work'); short = res['rows'][1]
    res['rows'].remove(short); (tmp_path/'wt.json').write_text(json.dumps(res))
    out3, res3 = study(tmp_path/'wt.json')
    assert 'bag of words on' not in out3 and f"as far as step {short['pretrain_steps']:,}" in out3
    assert [r['model'] for r in res3['rows']] == [r['model'] for r in res2['rows']] and res3['rows'][1]['pretrain_steps'] == short['pretrain_steps']
    same = lambda runs: [(r['matched'], r['mismatched']) for r in runs]
    assert same(res3['rows'][1]['runs']) == same(short['runs']) and res3['labels'] == res['labels']   # the same weights finetune the same
    rerun = res3['wikipedia']['rerun']
    assert rerun['steps'] == short['pretrain_steps'] and rerun['evals_compared'] >= 2 and rerun['max_abs_diff_mlm_accuracy'] == 0
    assert res3['wikipedia']['curve'] == wiki['curve'] and res3['total_minutes'] > res['total_minutes']
    # another study's settings in --out: refused, and the file is left as it was
    r = subprocess.run([sys.executable, 'bench/wiki_transfer.py', '--small', '--out', str(tmp_path/'wt.json'), '--work', str(tmp_path/'work'),
                        '--tokenizer', 'bench/studies/wiki_tokenizer', '--config-overrides', '{"sharing": "none"}'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith(f"error: --out {tmp_path/'wt.json'} holds a study with other settings (config_overrides None there")
    assert json.loads((tmp_path/'wt.json').read_text()) == res3

def test_glue_transfer(tmp_path):
    "GLUE at smoke size: both models through the suite on three tasks over two seeds, bag of words beside them, resumable."
    out, res = run_bench('glue_transfer.py', tmp_path/'gt.json', '--work', str(tmp_path/'work'))
    assert res['benchmark'] == 'glue_transfer' and [r['task'] for r in res['table']] == ['cola', 'stsb', 'rte']
    assert sorted((r['model'], r['task'], r['seed']) for r in res['rows']) == sorted(
        (m, t, s) for m in ('untrained', 'pretrained') for t in ('cola', 'stsb', 'rte') for s in (0, 1))
    stsb = res['bag_of_words']['stsb']['dev']['dev']
    assert {'pearson', 'spearman', 'score', 'n'} <= set(stsb) and stsb['n'] == 1500 and stsb['pearson'] > 5   # word overlap tracks similarity
    assert set(res['bag_of_words']['cola']['dev']['dev']) >= {'mcc', 'score'}
    for r in res['table']: assert r['untrained']['n'] == 2 and r['gain'] == r['pretrained']['mean'] - r['untrained']['mean']
    said = {r['task']: r['most_said'] for r in res['table']}      # how often each model said its most frequent label
    assert said['stsb'] is None and all(0.5 <= v <= 1 for t in ('cola', 'rte') for v in said[t].values())
    cola = next(r['results']['dev'] for r in res['rows'] if r['task'] == 'cola')
    assert set(cola['predicted']) == {'unacceptable', 'acceptable'} and sum(cola['predicted'].values()) == cola['n']
    assert Path(res['plot']).stat().st_size > 0 and 'bag of words' in out
    # a rerun finetunes nothing: every task's results come back from the suites' folders
    out2, res2 = run_bench('glue_transfer.py', tmp_path/'gt2.json', '--work', str(tmp_path/'work'))
    assert res2['rows'] == res['rows'] and 'finetuning on' not in out2

def test_glue_transfer_unknown_task(tmp_path):
    assert refused('glue_transfer.py', tmp_path, '--tasks', 'cola,squad').startswith("error: --tasks: unknown GLUE task 'squad'")

SCRIPTS = sorted(p.name for p in (ROOT/'bench').glob('*.py') if p.name != 'common.py')

@pytest.mark.parametrize('script', SCRIPTS)
def test_every_script_has_the_shared_options(script):
    "`--help` works (argparse formats each help with %: a bare % broke finetune_recipe's) and lists the options of `common.script_parser`."
    r = subprocess.run([sys.executable, f'bench/{script}', '--help'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert all(flag in r.stdout for flag in ('--out', '--threads', '--device', '--small')), r.stdout

@pytest.mark.parametrize('script', SCRIPTS)
def test_threads_below_one_is_one_clear_error(script):
    r = subprocess.run([sys.executable, f'bench/{script}', '--threads', '0', '--small', '--out', '/nonexistent/x.json'], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().count('\n') == 0 and '--threads must be' in r.stderr, (r.returncode, r.stderr[-2000:])

def test_bf16_training(tmp_path):
    "The bf16-against-fp32 study: both precisions per seed, the same tokenizer, each run's loss, SOP, NLI accuracy and time."
    out, res = run_bench('bf16_training.py', tmp_path/'bf16.json', '--work', str(tmp_path/'work'))
    check_machine(res)
    assert [(r['seed'], r['precision']) for r in res['rows']] == [(0, 'fp32'), (0, 'bf16')]
    for r in res['rows']:
        assert r['pretrain_mlm_loss'] > 0 and 0 <= r['pretrain_sop_accuracy'] <= 1 and 0 <= r['finetune_accuracy'] <= 1
        assert r['pretrain_seconds'] > 0 and r['finetune_seconds'] > 0
    assert set(res['summary']) == {'pretrain_speedup', 'mlm_loss_difference', 'sop_accuracy_difference', 'finetune_accuracy_difference'}
    assert 'bf16 / fp32: pretraining' in out and 'held-out MLM loss' in out
    assert len(list((tmp_path/'work'/'cache').iterdir())) >= 1          # one tokenizer and token cache for every run

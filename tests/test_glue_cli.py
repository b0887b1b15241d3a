"""`atombert finetune --task` on GLUE's files as they are: a regression (STS-B) and a classification (CoLA, no header);
single files, which hold one split each; and `atombert glue`, the suite."""
import json, shutil, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLUE = Path(os.environ.get('ATOMBERT_SHARED_DATA', ROOT.parent/'shared'/'data'))/'glue'
ENV = {**os.environ, 'HF_DATASETS_OFFLINE': '1', 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'OMP_NUM_THREADS': '1'}
ATOMBERT = str(Path(sys.executable).parent/'atombert')


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    "An untrained tiny model with a tokenizer trained on STS-B and CoLA text, as `pretrain` would leave one."
    import torch
    from atombert.config import AtomBertConfig
    from atombert.glue import read_glue
    from atombert.model import AtomBertForPreTraining
    from atombert.tokenizer import train_tokenizer
    d = tmp_path_factory.mktemp('pretrained')
    texts = [t for ex in read_glue('stsb', GLUE/'STS-B'/'train.tsv') for t in (ex['text_a'], ex['text_b'])]
    tok = train_tokenizer(texts + [ex['text_a'] for ex in read_glue('cola', GLUE/'CoLA'/'train.tsv')], vocab_size=1000, show_progress=False)
    torch.manual_seed(0)
    AtomBertForPreTraining(AtomBertConfig.preset('tiny', vocab_size=tok.get_vocab_size())).save_pretrained(d, tokenizer=tok)
    return d


@pytest.mark.parametrize('task,head', [('stsb', 1), ('cola', 2)])
def test_finetune_a_glue_task(tmp_path, pretrained, task, head):
    r = subprocess.run([ATOMBERT, 'finetune', '--model', str(pretrained), '--task', task, '--data', str(GLUE), '--out', str(tmp_path/'run'),
                        '--max-steps', '6', '--batch-size', '16', '--no-progress'], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert ('held-out dev (1,500 examples) loss' if head == 1 else 'held-out dev (1,043 examples) accuracy') in r.stdout, r.stdout
    config = json.loads((tmp_path/'run'/'config.json').read_text())
    assert len(config['id2label']) == config['atombert']['num_labels'] == head          # transformers reads id2label
    assert config['atombert']['label_names'] == ([] if head == 1 else ['unacceptable', 'acceptable'])
    e = subprocess.run([ATOMBERT, 'evaluate', '--model', str(tmp_path/'run'), '--task', task, '--data', str(GLUE)],
                       capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert e.returncode == 0, e.stderr[-3000:]
    res = json.loads((tmp_path/'run'/'eval'/'results.json').read_text())['dev']
    assert set(res) == ({'pearson', 'spearman', 'score', 'n'} if head == 1 else {'mcc', 'score', 'n', 'predicted'}) | {'weights', 'int8'}
    if head == 2:   # how often it said each label, also on the printed line
        assert sum(res['predicted'].values()) == res['n'] and f"predicted unacceptable {res['predicted']['unacceptable']:,}" in e.stdout
    assert res['n'] == (1500 if head == 1 else 1043) and f"{task} dev" in e.stdout
    # predict: a GLUE TSV (here the dev file), one JSON line per row with its index; or one example
    pred = subprocess.run([ATOMBERT, 'predict', '--model', str(tmp_path/'run'), '--task', task, '--data',
                           str(GLUE/('STS-B' if head == 1 else 'CoLA')/'dev.tsv'), '--out', str(tmp_path/'pred.jsonl'), '--no-progress'],
                          capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert pred.returncode == 0, pred.stderr[-3000:]
    rows = [json.loads(l) for l in (tmp_path/'pred.jsonl').read_text().splitlines()]
    assert [r['idx'] for r in rows] == list(range(res['n'])) and set(rows[0]) == ({'idx', 'score'} if head == 1 else {'idx', 'label', 'probabilities'})
    one = subprocess.run([ATOMBERT, 'predict', '--model', str(tmp_path/'run'), '--task', task, '--premise', 'A man is playing.',
                          *(['--hypothesis', 'A man plays.'] if head == 1 else [])], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert one.returncode == 0 and len(one.stdout.splitlines()) == 1, one.stderr
    other = subprocess.run([ATOMBERT, 'evaluate', '--model', str(tmp_path/'run'), '--task', 'rte', '--data', str(GLUE)],
                           capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert other.returncode == 1 and f'--task rte has labels entailment, not_entailment, the model' in other.stderr \
        and f'it was finetuned for {task}' in other.stderr, other.stderr


def test_single_files_are_one_split_each(tmp_path, pretrained):
    "A file holds one split: finetune scores its held-out set from --dev, never the training rows; evaluate a file under its name."
    cola = GLUE/'CoLA'
    base = [ATOMBERT, 'finetune', '--model', str(pretrained), '--task', 'cola', '--data', str(cola/'train.tsv'), '--out', str(tmp_path/'run')]
    r = subprocess.run(base, capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'give the held-out set with --dev FILE' in r.stderr, r.stderr
    assert not (tmp_path/'run').exists()
    r = subprocess.run(base + ['--dev', str(cola/'dev.tsv'), '--max-steps', '2', '--batch-size', '16', '--no-progress'],
                       capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 0 and 'held-out dev (1,043 examples) accuracy' in r.stdout, r.stderr[-3000:]   # CoLA's dev rows, not its 8,551 train rows
    assert f"GLUE scores cola by mcc: atombert evaluate --model {tmp_path/'run'} --data {cola/'dev.tsv'}" in r.stdout, r.stdout
    small = tmp_path/'first100.tsv'
    small.write_text(''.join((cola/'dev.tsv').read_text().splitlines(keepends=True)[:100]))
    for data in (cola/'dev.tsv', small):          # each file scored under its name; results.json keeps both
        e = subprocess.run([ATOMBERT, 'evaluate', '--model', str(tmp_path/'run'), '--data', str(data)], capture_output=True, text=True, env=ENV, cwd=ROOT)
        assert e.returncode == 0, e.stderr[-3000:]
    res = json.loads((tmp_path/'run'/'eval'/'results.json').read_text())
    assert list(res) == ['dev', 'first100'] and (res['dev']['n'], res['first100']['n']) == (1043, 100)


def test_a_task_without_its_files_is_one_line(tmp_path, pretrained):
    r = subprocess.run([ATOMBERT, 'finetune', '--model', str(pretrained), '--task', 'qqp', '--data', str(GLUE), '--out', str(tmp_path/'run')],
                       capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'qqp: no file' in r.stderr, r.stderr
    assert not (tmp_path/'run').exists()


def test_the_suite_in_one_command_resumes_task_by_task(tmp_path, pretrained):
    data = tmp_path/'data'; (data/'CoLA').mkdir(parents=True)              # GLUE's layout, with a test set for CoLA
    (data/'STS-B').mkdir()
    for task in ('CoLA', 'STS-B'):
        for f in ('train.tsv', 'dev.tsv'): (data/task/f).symlink_to(GLUE/task/f)
    (data/'STS-B'/'test.tsv').write_text('index\tsentence1\tsentence2\n0\tA cat sat.\n')       # a malformed test set
    (data/'CoLA'/'test.tsv').write_text('index\tsentence\n0\tThe cat sat.\n1\tSat the cat the.\n')
    argv = [ATOMBERT, 'glue', '--model', str(pretrained), '--data', str(data), '--tasks', 'stsb,cola,qqp', '--max-steps', '3',
            '--batch-size', '16', '--out', str(tmp_path/'glue'), '--no-progress']
    r = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    report = (tmp_path/'glue'/'report.md').read_text()
    assert '| stsb | dev | pearson' in report and '| cola | dev | mcc' in report and 'GLUE score over 2 task(s) (stsb, cola)' in report
    assert 'Skipped: qqp (qqp: no file' in report and (tmp_path/'glue'/'glue.png').stat().st_size > 5_000
    submission = (tmp_path/'glue'/'submission'/'CoLA.tsv').read_text().splitlines()
    assert submission[0] == 'index\tprediction' and [l.split('\t')[0] for l in submission[1:]] == ['0', '1']
    assert sorted(p.name for p in (tmp_path/'glue'/'submission').iterdir()) == ['CoLA.tsv']   # STS-B's test set is malformed
    assert "No submission file: stsb test (" in report and 'test.tsv:2: 2 fields, 3 expected' in report     # and said so
    (tmp_path/'glue'/'submission'/'CoLA.tsv').unlink()              # a kept task's missing submission file is written again
    done = tmp_path/'glue'/'stsb'/'glue_results.json'
    before = done.stat().st_mtime_ns
    e = subprocess.run([ATOMBERT, 'evaluate', '--model', str(tmp_path/'glue'/'stsb'), '--data', str(data)], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert e.returncode == 0 and (tmp_path/'glue'/'stsb'/'eval'/'results.json').is_file(), e.stderr[-3000:]   # evaluate's file, not glue's
    again = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert again.returncode == 0 and 'finetuning' not in again.stdout, again.stdout       # every task kept
    assert done.stat().st_mtime_ns == before and (tmp_path/'glue'/'report.md').read_text() == report
    assert (tmp_path/'glue'/'submission'/'CoLA.tsv').read_text().splitlines() == submission
    cola = tmp_path/'glue'/'cola'                                   # a suite made before glue kept its own marker
    (cola/'eval').mkdir(exist_ok=True); (cola/'glue_results.json').rename(cola/'eval'/'results.json')
    third = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert third.returncode == 0 and 'finetuning' not in third.stdout and (cola/'glue_results.json').is_file(), third.stdout
    # another model into the same suite folder: its kept results are not this model's, so it is refused before any training
    other = tmp_path/'other'; shutil.copytree(pretrained, other)
    from safetensors.torch import load_file, save_file
    weights = load_file(other/'model.safetensors'); first = next(iter(weights)); weights[first] = weights[first] + 1
    save_file(weights, other/'model.safetensors', metadata={'format': 'pt'})
    fourth = subprocess.run([*argv[:3], str(other), *argv[4:]], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert fourth.returncode == 1 and fourth.stderr.count('\n') == 1 and 'holds the GLUE results of another model or other settings (model)' in fourth.stderr, fourth.stderr
    assert done.stat().st_mtime_ns == before


def test_mnli_from_glue_download_and_an_unreachable_hub(tmp_path, pretrained):
    "MNLI in GLUE's download (ROOT/MNLI/*.tsv): finetune and evaluate both find it; with no hub, glue skips MNLI as it skips the rest."
    lines = (GLUE.parent/'mnli'/'dev_matched.jsonl').read_text().splitlines()
    (tmp_path/'glue_root'/'MNLI').mkdir(parents=True)
    for split, part in (('train', lines[48:96]), ('dev_matched', lines[:48]), ('dev_mismatched', lines[:48])):   # held out: other rows
        (tmp_path/'glue_root'/'MNLI'/f'{split}.tsv').write_text('index\tsentence1\tsentence2\tgold_label\n' + ''.join(
            f"{r['idx']}\t{r['premise']}\t{r['hypothesis']}\t{r['label_text']}\n" for r in map(json.loads, part)))
    root, run = str(tmp_path/'glue_root'), str(tmp_path/'run')
    r = subprocess.run([ATOMBERT, 'finetune', '--model', str(pretrained), '--task', 'mnli', '--data', root, '--out', run, '--max-steps', '2',
                        '--batch-size', '16', '--no-progress'], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    e = subprocess.run([ATOMBERT, 'evaluate', '--model', run, '--data', root], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert e.returncode == 0, e.stderr[-3000:]
    res = json.loads((tmp_path/'run'/'eval'/'results.json').read_text())
    assert list(res) == ['validation_matched', 'validation_mismatched'] and res['validation_matched']['n'] == 48
    # the suite writes MNLI's submission files and GLUE's diagnostic set (AX), which sits beside MNLI in GLUE's download
    pairs = [json.loads(l) for l in lines[:5]]
    (tmp_path/'glue_root'/'MNLI'/'test_matched.tsv').write_text('index\tsentence1\tsentence2\n' + ''.join(
        f"{i}\t{r['premise']}\t{r['hypothesis']}\n" for i, r in enumerate(pairs)))
    (tmp_path/'glue_root'/'diagnostic').mkdir()
    (tmp_path/'glue_root'/'diagnostic'/'diagnostic.tsv').write_text('index\tsentence1\tsentence2\n' + ''.join(
        f"{i}\t{r['hypothesis']}\t{r['premise']}\n" for i, r in enumerate(pairs[:3])))
    s = subprocess.run([ATOMBERT, 'glue', '--model', str(pretrained), '--data', root, '--tasks', 'mnli', '--max-steps', '2', '--batch-size', '16',
                        '--out', str(tmp_path/'suite'), '--no-progress'], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert s.returncode == 0, s.stderr[-3000:]
    submission = tmp_path/'suite'/'submission'
    assert sorted(p.name for p in submission.iterdir()) == ['AX.tsv', 'MNLI-m.tsv'], list(submission.iterdir())   # no test_mismatched here
    ax = [l.split('\t') for l in (submission/'AX.tsv').read_text().splitlines()]
    assert ax[0] == ['index', 'prediction'] and [r[0] for r in ax[1:]] == ['0', '1', '2'], ax
    assert {r[1] for r in ax[1:]} <= {'entailment', 'neutral', 'contradiction'}, ax      # words, as GLUE's MNLI files write them
    e = subprocess.run([ATOMBERT, 'evaluate', '--model', str(tmp_path/'suite'/'mnli'), '--data', root, '--splits', 'diagnostic',
                        '--out', str(tmp_path/'ax')], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert e.returncode == 0 and (tmp_path/'ax'/'diagnostic.tsv').read_text() == (submission/'AX.tsv').read_text(), e.stderr[-3000:]  # predicted, not scored
    (submission/'AX.tsv').unlink(); (tmp_path/'glue_root'/'diagnostic').rename(tmp_path/'elsewhere')   # no diagnostic set: said
    again = subprocess.run(s.args, capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert again.returncode == 0 and 'No submission file: mnli diagnostic (no diagnostic set' in (tmp_path/'suite'/'report.md').read_text(), again.stdout
    g = subprocess.run([ATOMBERT, 'glue', '--model', str(pretrained), '--data', 'hub', '--tasks', 'cola,mnli', '--out', str(tmp_path/'glue')],
                       capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert g.returncode == 1 and g.stderr.count('\n') == 1 and 'no GLUE task could run' in g.stderr, g.stderr[-3000:]   # not a success
    report = (tmp_path/'glue'/'report.md').read_text()
    assert 'Skipped: cola (cannot load GLUE cola' in report and 'mnli (cannot load MNLI from the hub' in report, report


def test_a_task_never_reads_another_tasks_files(tmp_path, pretrained):
    "RTE's and WNLI's files have the same columns and ids of opposite meaning (WNLI's 1 is entailment): one is never read as the other."
    g = subprocess.run([ATOMBERT, 'glue', '--model', str(pretrained), '--data', str(GLUE/'WNLI'), '--tasks', 'rte,mnli,wnli', '--max-steps', '2',
                        '--batch-size', '16', '--out', str(tmp_path/'glue'), '--no-progress'], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert g.returncode == 0, g.stderr[-3000:]
    report = (tmp_path/'glue'/'report.md').read_text()
    assert "Skipped: rte (" in report and "WNLI is WNLI's folder, not RTE's" in report and '| wnli | dev | accuracy' in report, report
    assert "mnli (" in report and "WNLI is WNLI's folder, not MNLI's" in report, report       # MNLI's reader too
    solo = tmp_path/'solo'; solo.mkdir()                   # several tasks from one folder named for none: each needs its own
    for f in ('train.tsv', 'dev.tsv'): (solo/f).symlink_to(GLUE/'WNLI'/f)
    g = subprocess.run([ATOMBERT, 'glue', '--model', str(pretrained), '--data', str(solo), '--tasks', 'wnli,cola', '--max-steps', '2',
                        '--batch-size', '16', '--out', str(tmp_path/'glue2'), '--no-progress'], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert g.returncode == 1 and 'no GLUE task could run' in g.stderr and 'several tasks read from one folder need one each' in g.stderr, g.stderr
    mine = tmp_path/'mine'; mine.mkdir()                   # WNLI's files in a folder whose name says nothing: their labels do
    for f in ('train.tsv', 'dev.tsv'): (mine/f).symlink_to(GLUE/'WNLI'/f)
    r = subprocess.run([ATOMBERT, 'finetune', '--model', str(pretrained), '--task', 'rte', '--data', str(mine), '--out', str(tmp_path/'run')],
                       capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and "train.tsv:2: label '1' is not one of ('entailment', 'not_entailment')" in r.stderr, r.stderr
    assert not (tmp_path/'run').exists()

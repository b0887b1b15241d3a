"""`atombert predict` end to end: pairs from TSV, JSONL and CSV files or one pair, int8, the output file written whole or
not at all, and bad input as one line with exit status 1."""
import json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ATOMBERT = str(Path(sys.executable).parent/'atombert')
MNLI_LABELS = ('entailment', 'neutral', 'contradiction')
ENV = {**os.environ, 'HF_DATASETS_OFFLINE': '1', 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'OMP_NUM_THREADS': '1'}
PAIRS = [('A man is playing a guitar on stage.', 'A man is playing music.'),
         ('A woman reads a book in the park.', 'Nobody is reading.'),
         ('Two dogs run on the beach, "happily".', 'Animals are outside.')]


def atombert(*args):
    return subprocess.run([ATOMBERT, *map(str, args)], capture_output=True, text=True, env=ENV, cwd=ROOT)


@pytest.fixture(scope='module')
def classifier(tmp_path_factory):
    "A tiny classifier with named labels and its tokenizer, saved as `finetune` saves one (its weights untrained: mechanics only)."
    import torch
    from atombert.config import AtomBertConfig
    from atombert.model import AtomBertForSequenceClassification
    from atombert.mnli import MNLI_LABELS, builtin_nli
    from atombert.tokenizer import train_tokenizer
    d = tmp_path_factory.mktemp('clf')/'model'
    texts = [t for ex in builtin_nli(300) for t in (ex['premise'], ex['hypothesis'])] + [t for p in PAIRS for t in p]
    tok = train_tokenizer(texts, vocab_size=400, show_progress=False)
    torch.manual_seed(0)
    model = AtomBertForSequenceClassification(AtomBertConfig.preset('tiny', vocab_size=tok.get_vocab_size(), label_names=MNLI_LABELS))
    model.save_pretrained(d, tokenizer=tok)
    return d


def write_pairs(path: Path, kind: str) -> Path:
    if kind == 'tsv': path.write_text('premise\thypothesis\n' + ''.join(f'{p}\t{h}\n' for p, h in PAIRS))
    elif kind == 'jsonl': path.write_text(''.join(json.dumps(dict(sentence1=p, sentence2=h)) + '\n' for p, h in PAIRS))
    else:
        import csv
        with open(path, 'w', newline='') as f:
            w = csv.writer(f); w.writerow(['premise', 'hypothesis']); w.writerows(PAIRS)
    return path


@pytest.mark.parametrize('kind', ['tsv', 'jsonl', 'csv'])
def test_pairs_from_a_file(tmp_path, classifier, kind):
    out = tmp_path/'predictions.jsonl'
    r = atombert('predict', '--model', classifier, '--data', write_pairs(tmp_path/f'pairs.{kind}', kind), '--out', out, '--no-progress')
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 3 and all(set(row['probabilities']) == {'entailment', 'neutral', 'contradiction'} for row in rows)
    assert all(row['label'] == max(row['probabilities'], key=row['probabilities'].get) for row in rows)
    assert all(abs(sum(row['probabilities'].values()) - 1) < 1e-4 for row in rows)
    assert '3 pair(s)' in r.stderr and 'pairs/s' in r.stderr


def test_one_line_per_input_row_in_order(tmp_path, classifier):
    "A row without a gold label ('-', as MNLI marks them) is still a pair to label: three rows in, three lines out, each with its row."
    data = tmp_path/'labelled.tsv'
    labels = ['entailment', '-', 'neutral']
    data.write_text('premise\thypothesis\tlabel\n' + ''.join(f'{p}\t{h}\t{l}\n' for (p, h), l in zip(PAIRS, labels)))
    r = atombert('predict', '--model', classifier, '--data', data, '--no-progress')
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in r.stdout.splitlines()]
    assert [row['idx'] for row in rows] == [0, 1, 2]
    plain = atombert('predict', '--model', classifier, '--data', write_pairs(tmp_path/'p.tsv', 'tsv'), '--no-progress')
    assert rows == [json.loads(l) for l in plain.stdout.splitlines()]        # the labels change nothing

def test_evaluate_scores_a_file_under_its_name(tmp_path, classifier):
    "`evaluate --data FILE`: the file is one labelled split, scored under its name (not as MNLI's two dev sets)."
    data = tmp_path/'my_pairs.tsv'
    data.write_text('premise\thypothesis\tlabel\n' + ''.join(f'{p}\t{h}\t{l}\n' for (p, h), l in zip(PAIRS, MNLI_LABELS)))
    r = atombert('evaluate', '--model', classifier, '--data', data, '--out', tmp_path/'eval')
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path/'eval'/'results.json').read_text())
    assert list(res) == ['my_pairs'] and res['my_pairs']['n'] == 3 and (tmp_path/'eval'/'confusion_my_pairs.png').is_file()
    test = write_pairs(tmp_path/'test_matched.tsv', 'tsv')                    # unlabelled, named as GLUE names a test set
    r = atombert('evaluate', '--model', classifier, '--data', test, '--out', tmp_path/'eval')
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path/'eval'/'results.json').read_text())
    assert list(res) == ['my_pairs', 'test_matched'] and len(Path(res['test_matched']['predictions']).read_text().splitlines()) == 4


def test_evaluate_keeps_only_scores_of_the_weights_it_has(tmp_path, classifier):
    "results.json merges the splits scored into one folder, but not across weights: a score names the weights it came from."
    import shutil, torch
    from atombert.checkpoint import tensor_digest
    from atombert.model import AtomBertForSequenceClassification
    weights_of = lambda d: tensor_digest(AtomBertForSequenceClassification.from_pretrained(d).state_dict())
    model, out = tmp_path/'model', tmp_path/'eval'
    shutil.copytree(classifier, model)
    data = tmp_path/'first.tsv'
    data.write_text('premise\thypothesis\tlabel\n' + ''.join(f'{p}\t{h}\t{l}\n' for (p, h), l in zip(PAIRS, MNLI_LABELS)))
    assert atombert('evaluate', '--model', model, '--data', data, '--out', out).returncode == 0
    first = json.loads((out/'results.json').read_text())['first']
    assert first['weights'] == weights_of(model) and first['int8'] is False and (out/'confusion_first.png').is_file()
    clf = AtomBertForSequenceClassification.from_pretrained(model)
    with torch.no_grad(): clf.classifier.bias.add_(1.0)
    clf.save_pretrained(model)                                               # finetuned again, say: other weights, same folder
    shutil.copy(data, tmp_path/'second.tsv')
    r = atombert('evaluate', '--model', model, '--data', tmp_path/'second.tsv', '--out', out)
    assert r.returncode == 0 and 'left out first (other weights): scored otherwise than this run; removed confusion_first.png' in r.stderr, r.stderr
    res = json.loads((out/'results.json').read_text())
    assert list(res) == ['second'] and res['second']['weights'] == weights_of(model) != first['weights']
    assert not (out/'confusion_first.png').exists() and (out/'confusion_second.png').is_file()   # no plot of other weights stays
    r = atombert('evaluate', '--model', model, '--data', data, '--out', out, '--int8')
    assert r.returncode == 0 and 'left out second (int8 off): scored otherwise than this run; removed confusion_second.png' in r.stderr, r.stderr     # an int8 score is not the model's own either
    res = json.loads((out/'results.json').read_text())
    assert list(res) == ['first'] and res['first']['int8'] is True and res['first']['weights'] == weights_of(model)


def test_one_pair_and_int8_agree_with_the_file(tmp_path, classifier):
    r = atombert('predict', '--model', classifier, '--data', write_pairs(tmp_path/'p.tsv', 'tsv'), '--no-progress')
    first = json.loads(r.stdout.splitlines()[1])
    one = atombert('predict', '--model', classifier, '--premise', PAIRS[1][0], '--hypothesis', PAIRS[1][1])
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout) == {**first, 'idx': 0} and first['idx'] == 1
    q = atombert('predict', '--model', classifier, '--premise', PAIRS[1][0], '--hypothesis', PAIRS[1][1], '--int8')
    assert q.returncode == 0 and 'int8' in q.stderr, q.stderr
    assert abs(json.loads(q.stdout)['probabilities']['neutral'] - first['probabilities']['neutral']) < 0.05


@pytest.mark.parametrize('case', ['no-pairs', 'premise-alone', 'missing-file', 'no-hypothesis-column', 'not-a-classifier'])
def test_bad_input_is_one_line_and_the_output_is_kept(tmp_path, classifier, case):
    out = tmp_path/'predictions.jsonl'; out.write_text('earlier results\n')
    bad = tmp_path/'bad.csv'; bad.write_text('premise,claim\na,b\n')
    pre = tmp_path/'pre'
    if case == 'not-a-classifier':
        from atombert.config import AtomBertConfig
        from atombert.model import AtomBertForPreTraining
        AtomBertForPreTraining(AtomBertConfig.preset('tiny')).save_pretrained(pre)
    args = {'no-pairs': [], 'premise-alone': ['--premise', 'x'], 'missing-file': ['--data', tmp_path/'nope.tsv'],
            'no-hypothesis-column': ['--data', bad], 'not-a-classifier': ['--premise', 'a', '--hypothesis', 'b']}[case]
    r = atombert('predict', '--model', pre if case == 'not-a-classifier' else classifier, *args, '--out', out)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith('atombert: error:') and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert out.read_text() == 'earlier results\n'


def test_transformers_pipeline_shows_label_names(classifier):
    "The saved config names the labels (id2label), so transformers' pipeline answers with names, not LABEL_0."
    from transformers import pipeline
    from atombert.mnli import MNLI_LABELS
    clf = pipeline('text-classification', model=str(classifier), device='cpu')
    out = clf({'text': PAIRS[0][0], 'text_pair': PAIRS[0][1]}, top_k=None)
    assert sorted(o['label'] for o in out) == sorted(MNLI_LABELS)


@pytest.mark.parametrize('task', ['stsb', 'cola'])
def test_transformers_pipeline_matches_a_glue_model(tmp_path, task):
    """A GLUE model saved by atombert answers the same in transformers' pipeline: STS-B's raw score (the config says
    `problem_type='regression'`, so the pipeline applies no sigmoid) and CoLA's label probabilities, within 5e-5 (STS-B's relative past 1;
    classify_pairs rounds to 6 decimals)."""
    import torch
    from transformers import pipeline
    from atombert.config import AtomBertConfig
    from atombert.evaluation import classify_pairs
    from atombert.glue import glue_task
    from atombert.model import AtomBertForSequenceClassification
    from atombert.tokenizer import load_tokenizer, train_tokenizer
    t = glue_task(task)
    tok = train_tokenizer([s for p in PAIRS for s in p] * 20, vocab_size=200, show_progress=False)
    torch.manual_seed(0)
    model = AtomBertForSequenceClassification(AtomBertConfig.preset('tiny', vocab_size=tok.get_vocab_size(), num_labels=t.num_labels,
                                                                    label_names=t.labels, initializer_range=0.5)).eval()
    model.save_pretrained(tmp_path, tokenizer=tok)
    ours = classify_pairs(model, load_tokenizer(tmp_path), [dict(text_a=p, **({'text_b': h} if len(t.text) == 2 else {})) for p, h in PAIRS])
    clf = pipeline('text-classification', model=str(tmp_path), device='cpu')
    inputs = [{'text': p, 'text_pair': h} if len(t.text) == 2 else p for p, h in PAIRS]
    theirs = [clf(x, top_k=None) for x in inputs]
    if t.is_regression:
        assert json.loads((tmp_path/'config.json').read_text())['problem_type'] == 'regression'
        got = [o[0]['score'] for o in theirs]
        assert len({round(g, 3) for g in got}) == 3                        # the inputs score differently: a real comparison
        diffs = [abs(g - o['score']) / max(1, abs(g)) for g, o in zip(got, ours)]
        assert max(diffs) < 5e-5, diffs                                   # float32 through two attention kernels: relative past 1
    else:
        for o, th in zip(ours, theirs):
            assert {x['label'] for x in th} == set(t.labels)
            assert max(abs(x['score'] - o['probabilities'][x['label']]) for x in th) < 5e-5   # float32 through two attention kernels, as STS-B's


def test_output_never_overwrites_the_input(tmp_path, classifier):
    "--out naming --data (predict), or --out holding a test file whose predictions take its name (evaluate): one line, input kept."
    pairs = write_pairs(tmp_path/'pairs.jsonl', 'jsonl'); before = pairs.read_text()
    r = atombert('predict', '--model', classifier, '--data', pairs, '--out', tmp_path/'.'/'pairs.jsonl', '--no-progress')
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'is --data: the predictions would overwrite the examples' in r.stderr, r.stderr
    test = tmp_path/'test_matched.tsv'; write_pairs(test, 'tsv'); before_test = test.read_text()
    e = atombert('evaluate', '--model', classifier, '--data', test, '--out', tmp_path)
    assert e.returncode == 1 and e.stderr.count('\n') == 1 and 'the predictions would overwrite it' in e.stderr, e.stderr
    # a folder holding the test split, or GLUE's download (ROOT/MNLI/), with --out the folder the split is read from
    (tmp_path/'glue'/'MNLI').mkdir(parents=True); glue_test = tmp_path/'glue'/'MNLI'/'test_matched.tsv'; write_pairs(glue_test, 'tsv')
    for data, out in ((tmp_path, tmp_path), (tmp_path/'glue', tmp_path/'glue'/'MNLI')):
        e = atombert('evaluate', '--model', classifier, '--data', data, '--splits', 'test_matched', '--out', out)
        assert e.returncode == 1 and e.stderr.count('\n') == 1 and 'test_matched.tsv there is input' in e.stderr, e.stderr
    assert (pairs.read_text(), test.read_text(), glue_test.read_text()) == (before, before_test, before_test)
    for _ in range(2):            # --out inside the data folder: its own predictions file is written again, not refused
        e = atombert('evaluate', '--model', classifier, '--data', tmp_path/'glue', '--splits', 'test_matched', '--out', tmp_path/'glue'/'eval')
        assert e.returncode == 0, e.stderr
    assert (tmp_path/'glue'/'eval'/'test_matched.tsv').read_text().startswith('index\tprediction\n')


def test_outputs_never_land_on_the_model_or_a_damaged_results_file(tmp_path, classifier):
    "predict --out inside --model, evaluate --out naming a file, or a results.json evaluate did not write: one line, nothing changed."
    config = (classifier/'config.json').read_text()
    r = atombert('predict', '--model', classifier, '--premise', 'A man eats.', '--hypothesis', 'Someone eats.', '--out', classifier/'config.json')
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'is inside --model' in r.stderr and (classifier/'config.json').read_text() == config, r.stderr
    pairs = write_pairs(tmp_path/'test_matched.tsv', 'tsv')
    (tmp_path/'file').write_text('x')
    e = atombert('evaluate', '--model', classifier, '--data', pairs, '--out', tmp_path/'file')
    assert e.returncode == 1 and e.stderr.count('\n') == 1 and 'is a file; give a folder' in e.stderr, e.stderr
    for bad in ('[]', '{"dev": 5}', '{'):
        (tmp_path/'ev').mkdir(exist_ok=True); (tmp_path/'ev'/'results.json').write_text(bad)
        e = atombert('evaluate', '--model', classifier, '--data', pairs, '--out', tmp_path/'ev')
        assert e.returncode == 1 and e.stderr.count('\n') == 1 and 'is not what evaluate writes' in e.stderr, (bad, e.stderr)
        assert (tmp_path/'ev'/'results.json').read_text() == bad


def test_predict_reads_texts_only(tmp_path):
    "predict never reads the label column: an RTE file whose labels are ids (as WNLI writes them) is still labelled, row by row."
    import torch
    from atombert.config import AtomBertConfig
    from atombert.glue import glue_task
    from atombert.model import AtomBertForSequenceClassification
    from atombert.tokenizer import train_tokenizer
    t = glue_task('rte')
    tok = train_tokenizer([s for p in PAIRS for s in p] * 20, vocab_size=200, show_progress=False)
    torch.manual_seed(0)
    AtomBertForSequenceClassification(AtomBertConfig.preset('tiny', vocab_size=tok.get_vocab_size(), num_labels=2, label_names=t.labels)
                                      ).save_pretrained(tmp_path/'rte', tokenizer=tok)
    data = tmp_path/'dev.tsv'
    data.write_text('index\tsentence1\tsentence2\tlabel\n' + ''.join(f'{i}\t{p}\t{h}\t{i % 2}\n' for i, (p, h) in enumerate(PAIRS)))
    r = atombert('predict', '--model', tmp_path/'rte', '--task', 'rte', '--data', data, '--no-progress')
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in r.stdout.splitlines()]
    assert len(rows) == 3 and all(set(row['probabilities']) == set(t.labels) for row in rows)

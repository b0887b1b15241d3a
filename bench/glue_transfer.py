"""Where does pretraining matter on GLUE? A pretrained model and its untrained twin (same config, tokenizer and
initialization seed), each run through the `atombert glue` suite on every task with train data in `../shared/data/glue/`
(CoLA, SST-2, MRPC, STS-B, RTE, WNLI), over several finetuning seeds, beside a bag-of-words model (scikit-learn) trained
on the same examples.

- **finetuning**: `atombert.commands.glue_cmd`, the suite's one code path: `finetune`'s defaults for each task (3 epochs, 10
  for RTE and STS-B; batch 32; the LR by width), scored on each task's dev set with GLUE's metrics;
- **seeds**: --seeds for the tasks under 10,000 train examples (the noisy ones), --large-seeds for the others;
- **bag of words**: `bag_of_words_task`: unigrams and bigrams of each sentence, and for pairs the second sentence's words
  found in the first and the shares of each found in the other; logistic regression (ridge for STS-B), its strength
  chosen on a tenth of the train set;
- **resumable**: each (model, seed) suite keeps its finished tasks in --work, so a rerun picks up where it stopped.

    python bench/glue_transfer.py --out bench/studies/glue_transfer.json       # the pretrained model of wiki_transfer_60min
    python bench/glue_transfer.py --small                                         # CI smoke size
"""
import json, re, statistics, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import common as C
import transfer as T

SMALL_TASK = 10_000                                  # fewer train examples than this: a noisy task, more seeds

def parse_args(argv=None):
    p = C.script_parser(__doc__, 'bench/results/glue_transfer.json', 'a tiny model pretrained for 20 steps, 3 tasks, 3 steps each')
    p.add_argument('--pretrained', default='runs/wiki_transfer/pretrain-wikipedia',
                   help="a pretraining run's folder (its config.json, run.json, tokenizer and weights); default: wiki_transfer's 60-minute run")
    p.add_argument('--data', default=None, help='a folder of GLUE task folders (default: the shared data folder)')
    p.add_argument('--tasks', default='cola,sst2,mrpc,stsb,rte,wnli', help='comma-separated GLUE tasks')
    p.add_argument('--seeds', default='0,1,2', help=f'finetuning seeds of the tasks under {SMALL_TASK:,} train examples')
    p.add_argument('--large-seeds', default='0', help='finetuning seeds of the larger tasks')
    p.add_argument('--max-steps', type=int, default=0, help='optimizer steps per task (0: from the task\'s epochs)')
    p.add_argument('--work', default='runs/glue_transfer')
    args = p.parse_args(argv)
    try:
        args.tasks = [t.strip() for t in args.tasks.split(',') if t.strip()]
        args.seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
        args.large_seeds = [int(s) for s in args.large_seeds.split(',') if s.strip()]
    except ValueError as e: raise SystemExit(f'error: --seeds and --large-seeds are comma-separated integers ({e})')
    from atombert.glue import glue_task
    try: args.tasks = [glue_task(t).name for t in args.tasks]
    except ValueError as e: raise SystemExit(f'error: --tasks: {e}')
    if not (args.tasks and args.seeds and args.large_seeds): raise SystemExit('error: --tasks, --seeds and --large-seeds each need one at least')
    if args.max_steps < 0: raise SystemExit('error: --max-steps must be >= 0')
    C.set_threads(args)
    if args.small: args.tasks, args.seeds, args.large_seeds, args.max_steps = ['cola', 'stsb', 'rte'], [0, 1], [0], 3
    return args

# ---------------------------------------------------------------- bag of words

def bag_of_words_task(task, train:list, devs:dict) -> dict:
    """GLUE's metrics on each dev set of `task` for a linear model of word counts: unigrams and bigrams of each sentence;
    for pairs also the second sentence's words found in the first and the shares of each sentence's words found in the
    other. Logistic regression (ridge for STS-B), its strength chosen on the first tenth of the train set."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge
    from atombert.glue import glue_metrics, task_score
    words = lambda s: re.findall(r"[a-z0-9']+", s.lower())
    pair = 'text_b' in train[0]
    def share(a, b): wa, wb = words(a), set(words(b)); return sum(w in wb for w in wa) / max(len(wa), 1)
    vec_a = CountVectorizer(ngram_range=(1, 2), min_df=2, binary=True)
    vec_b, vec_o = CountVectorizer(ngram_range=(1, 2), min_df=2, binary=True), CountVectorizer(min_df=2, binary=True, token_pattern=r"[a-z0-9']+")
    def features(rows, fit=False):
        f = (lambda v, x: v.fit_transform(x)) if fit else (lambda v, x: v.transform(x))
        A = [r['text_a'] for r in rows]
        if not pair: return f(vec_a, A).tocsr()
        B = [r['text_b'] for r in rows]
        O = [' '.join(w for w in words(b) if w in set(words(a))) for a, b in zip(A, B)]
        dense = sp.csr_matrix(np.array([[share(b, a), share(a, b)] for a, b in zip(A, B)]))
        return sp.hstack([f(vec_a, A), f(vec_b, B), f(vec_o, O), dense]).tocsr()
    X, y = features(train, fit=True), np.array([r['label'] for r in train])
    fit = (lambda c, X, y: Ridge(alpha=1 / c).fit(X, y)) if task.is_regression else (lambda c, X, y: LogisticRegression(C=c, max_iter=2000).fit(X, y))
    n_val = max(1, len(y) // 10)
    val = {c: task_score(glue_metrics(task, fit(c, X[n_val:], y[n_val:]).predict(X[:n_val]), y[:n_val])) for c in (0.1, 0.3, 1.0)}
    best = max(val, key=val.get)
    model = fit(best, X, y)
    out = {}
    for split, rows in devs.items():
        metrics = glue_metrics(task, model.predict(features(rows)), [r['label'] for r in rows])
        out[split] = metrics | dict(score=task_score(metrics), n=len(rows))
    return dict(C=best, validation=val, features=X.shape[1], dev=out)

# ---------------------------------------------------------------- the study

def task_score_of(results:dict) -> float:
    "A task's score over its dev sets (MNLI: matched and mismatched)."
    return statistics.mean(r['score'] for r in results.values())

def most_said(runs:list) -> float:
    """The share of dev predictions that went to the label a model said most, averaged over its runs (MNLI: over both dev
    sets); None where no run counted them (results kept from before `evaluate_glue` did)."""
    shares = [max(d['predicted'].values()) / d['n'] for r in runs for d in r['results'].values() if 'predicted' in d]
    return statistics.mean(shares) if shares else None

def summary(values:list) -> dict:
    return dict(mean=statistics.mean(values), sd=statistics.stdev(values) if len(values) > 1 else 0.0, min=min(values), max=max(values), n=len(values))

def main(argv=None):
    args = parse_args(argv)
    from atombert.commands import glue_cmd
    from atombert.finetuning import task_examples
    from atombert.glue import glue_task
    work = Path(args.work); work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = Path(args.data) if args.data else C.shared_path('glue')
    pretrained = T.small_pretrained(work) if args.small else Path(args.pretrained)
    if not (pretrained/'model.safetensors').is_file(): raise SystemExit(f'error: --pretrained {pretrained}: no model.safetensors there')
    models = dict(untrained=T.untrained_model(args, pretrained, work), pretrained=pretrained)
    info = json.loads((pretrained/'run.json').read_text()) if (pretrained/'run.json').is_file() else {}

    sizes = {t: len(task_examples(t, str(data), 'train')) for t in args.tasks}
    bow, rows = {}, []
    for t in args.tasks:
        task = glue_task(t)
        print(f'{t}: bag of words on {sizes[t]:,} examples ...', flush=True)
        bow[t] = bag_of_words_task(task, task_examples(task, str(data), 'train'), {s: task_examples(task, str(data), s) for s in task.dev})
    for seed in sorted(set(args.seeds) | set(args.large_seeds)):      # seed by seed: a stopped run has both models at the first seeds
        for name, path in models.items():
            tasks = [t for t in args.tasks if seed in (args.seeds if sizes[t] < SMALL_TASK else args.large_seeds)]
            if not tasks: continue
            print(f'{name}, seed {seed}: {", ".join(tasks)} ...', flush=True)
            suite = glue_cmd(str(path), str(data), str(work/f'{name}-seed-{seed}'), tasks=','.join(tasks), max_steps=args.max_steps,
                             progress=False, seed=seed)
            if suite['skipped']: raise SystemExit(f"error: {name}: the suite skipped {suite['skipped']}")
            for t in tasks: rows.append(dict(model=name, task=t, seed=seed, score=task_score_of(suite['results'][t]), results=suite['results'][t]))

    table = []
    for t in args.tasks:
        row = dict(task=t, train_examples=sizes[t], metrics=list(glue_task(t).metrics), bag_of_words=task_score_of(bow[t]['dev']))
        for name in models: row[name] = summary([r['score'] for r in rows if r['model'] == name and r['task'] == t])
        row['gain'] = row['pretrained']['mean'] - row['untrained']['mean']
        row['most_said'] = None if glue_task(t).is_regression else {name: most_said([r for r in rows if r['model'] == name and r['task'] == t]) for name in models}
        table.append(row)
    average = {name: statistics.mean(r[name]['mean'] for r in table) for name in models} | dict(bag_of_words=statistics.mean(r['bag_of_words'] for r in table))
    out = Path(args.out)
    result = dict(benchmark='glue_transfer', machine=C.machine_info('cpu'), args=vars(args),
                  pretrained=dict(path=str(pretrained), preset=info.get('args', {}).get('preset'), budget=info.get('budget'),
                                  train_tokens=info.get('train_tokens')),
                  data=str(data), bag_of_words=bow, rows=rows, table=table, average=average,
                  average_gain=average['pretrained'] - average['untrained'], total_minutes=(time.perf_counter() - t0) / 60)
    result['plot'] = str(plot(result, out.with_suffix('.png')))
    print()
    C.print_table([dict(task=r['task'], n=r['train_examples'], metric='/'.join(r['metrics']), seeds=r['untrained']['n'],
                        u=r['untrained']['mean'], usd=r['untrained']['sd'], p=r['pretrained']['mean'], psd=r['pretrained']['sd'],
                        gain=r['gain'], bow=r['bag_of_words'], said='' if r['most_said'] is None else
                        ' / '.join('–' if v is None else f'{v:.0%}' for v in r['most_said'].values())) for r in table]
                  + [dict(task='average', u=average['untrained'], p=average['pretrained'], gain=result['average_gain'], bow=average['bag_of_words'])],
                  [('task', 'task', ''), ('n', 'train examples', ','), ('metric', 'metric', ''), ('seeds', 'seeds', 'd'),
                   ('u', 'untrained', '.2f'), ('usd', '± sd', '.2f'), ('p', 'pretrained', '.2f'), ('psd', '± sd', '.2f'),
                   ('gain', 'gain', '+.2f'), ('bow', 'bag of words', '.2f'), ('said', 'most-said label u / p', '')])
    print(f"dev scores (GLUE's metrics; two-metric tasks: their mean), finetune's defaults per task; total {result['total_minutes']:.0f} minutes")
    print(f'wrote {C.write_json(out, result)} and {result["plot"]}')
    return result

def plot(result:dict, path:Path) -> Path:
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    table = result['table']
    fig, ax = plt.subplots(figsize=(3 + 1.6 * len(table), 4.8))
    x = np.arange(len(table))
    for i, (name, c) in enumerate((('untrained', 'C0'), ('pretrained', 'C1'))):
        ax.bar(x + (i - 0.5) * 0.36, [r[name]['mean'] for r in table], 0.36, color=c, alpha=0.8, label=name)
        for j, r in enumerate(table):             # every seed as a dot: the noise of the small tasks shows
            s = [row['score'] for row in result['rows'] if row['model'] == name and row['task'] == r['task']]
            ax.plot([j + (i - 0.5) * 0.36] * len(s), s, 'k.', ms=4)
    ax.plot(x, [r['bag_of_words'] for r in table], 'D', color='C2', label='bag of words')
    ax.set_xticks(x, [f"{r['task']}\n({'/'.join(r['metrics'])})" for r in table])
    ax.axhline(0, color='grey', lw=0.5)
    ax.set_ylabel('dev score')
    ax.set_title(f"GLUE dev, mean over seeds: pretrained {result['average']['pretrained']:.1f}, untrained "
                 f"{result['average']['untrained']:.1f},\nbag of words {result['average']['bag_of_words']:.1f} (task average)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return C.save_figure(fig, path)

if __name__ == '__main__':
    main()

"""Does real text transfer? `atombert pretrain`'s CPU recipe on the 65M words of Wikipedia in `../shared/data/wikipedia/`
(the seven `xz` shards as they are), for a wall-clock budget, then MNLI on all 29,946 real train pairs.

One command, resumable: every finished piece is kept in --work and reused, and every measured row in --out is kept. When
--work is gone (a new machine), a rerun finetunes only what --out lacks, and redoes the Wikipedia pretraining, with the step
count --out recorded, only as far as the checkpoints still to finetune (so the run is the same, step for step; the held-out
curves of both runs are compared in `wikipedia.rerun`).

- **pretrained on Wikipedia**: `atombert.pretrain.pretrain(shards, budget_minutes=--minutes)` with every other setting at
  its default (the `small` preset, its WordPiece vocabulary trained on the shards), held out on WikiText raw validation
  (never in the shards) with the unigram references; a checkpoint every --save-every steps, and the ones nearest
  --checkpoint-minutes of training are finetuned;
- **pretrained on the 1.1M-token study corpus** (`common.study_corpus`: WikiText-2 raw test + the unpaired MNLI sample
  text, the earlier studies' text) for --control-minutes with the same tokenizer: the data effect alone (0: skipped);
- **untrained**: the same model as initialized, with the same tokenizer;
- each finetuned with `finetune`'s defaults on the 20k MNLI train sample + `train_extra_9946.tsv` (29,946 pairs), every
  seed of --seeds, scored on the full dev matched and mismatched sets;
- **bag of words**: `transfer.bag_of_words` (scikit-learn's logistic regression) on the same 29,946 pairs;
- **fewer labels**: the longest-trained and the untrained model finetuned on the first N pairs of --label-budgets.

    python bench/wiki_transfer.py --tokenizer bench/studies/wiki_tokenizer --work runs/wiki_transfer_120 --out bench/studies/wiki_transfer.json
        # 2 cores, over several sessions: pretraining 120 + control 120 min, 10 finetunings of 10.5-13.8 min, fewer labels;
        # the JSON's total_minutes, 246.6, misses its first sessions
    python bench/wiki_transfer.py --minutes 60 --checkpoint-minutes 15,30,60 --control-minutes 0
    python bench/wiki_transfer.py --small                                                  # CI smoke size
"""
import json, lzma, math, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C
import transfer as T

MNLI_EXTRA = 'mnli/train_extra_9946.tsv'
HELD_OUT = C.WIKITEXT_RAW[0]                       # WikiText raw validation: never in the shards

def parse_args(argv=None):
    p = C.script_parser(__doc__, 'bench/results/wiki_transfer.json', 'preset tiny, two tiny shards, 300 pairs, seconds of pretraining')
    p.add_argument('--shards', default=None, help='folder of the Wikipedia shards (default: the shared data folder)')
    p.add_argument('--preset', default='small')
    p.add_argument('--config-overrides', default=None, help='config fields over the preset\'s, as pretrain takes them (JSON), e.g. \'{"sharing": "none"}\'')
    p.add_argument('--minutes', type=float, default=120, help='pretraining budget on Wikipedia (minutes of training)')
    p.add_argument('--checkpoint-minutes', default='30,60,120', help='finetune the checkpoints nearest these minutes')
    p.add_argument('--control-minutes', type=float, default=120, help='budget on the 1.1M-token corpus (0: skip)')
    p.add_argument('--tokenizer', default=None, help='a tokenizer folder for every model (default: trained on the shards by pretrain); '
                   'bench/studies/wiki_tokenizer is the one this study trained, so that a later run compares like with like')
    p.add_argument('--save-every', type=int, default=500, help='pretraining checkpoint interval (steps)')
    p.add_argument('--seeds', default='0,1', help='finetuning seeds')
    p.add_argument('--label-budgets', default='1000,5000', help='fewer labelled pairs for the longest-trained and the untrained model ("": skip)')
    p.add_argument('--work', default='runs/wiki_transfer')
    args = p.parse_args(argv)
    try:
        args.checkpoint_minutes = sorted({float(m) for m in args.checkpoint_minutes.split(',') if m.strip()})
        args.seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
        args.label_budgets = sorted({int(n) for n in args.label_budgets.split(',') if n.strip()})
    except ValueError as e: raise SystemExit(f'error: --checkpoint-minutes, --seeds and --label-budgets are comma-separated numbers ({e})')
    if not args.minutes > 0: raise SystemExit('error: --minutes must be > 0')
    if args.control_minutes < 0 or args.save_every < 1: raise SystemExit('error: --control-minutes must be >= 0 and --save-every >= 1')
    if not args.seeds: raise SystemExit('error: --seeds names no seed')
    if any(not 0 < m <= args.minutes for m in args.checkpoint_minutes):
        raise SystemExit(f'error: --checkpoint-minutes must lie in (0, --minutes {args.minutes:g}]')
    C.set_threads(args)
    if args.small:
        args.preset, args.minutes, args.control_minutes, args.save_every = 'tiny', 0.25, 0.25, 10
        args.checkpoint_minutes, args.seeds, args.label_budgets = [0.1, 0.25], [0], [100]
    return args

def small_shards(work:Path) -> Path:
    "Two xz shards of WikiText-2 raw test, as a stand-in for the Wikipedia folder (CI)."
    folder = work/'shards'; folder.mkdir(parents=True, exist_ok=True)
    text = C.shared_path(C.WIKITEXT_RAW[1]).read_bytes()
    for i, part in enumerate((text[:len(text) // 2], text[len(text) // 2:])):
        if not (folder/f'part-{i}.txt.xz').exists(): (folder/f'part-{i}.txt.xz').write_bytes(lzma.compress(part))
    return folder

def mnli_data(args):
    "(the 29,946 train pairs, {matched, mismatched} dev sets); 300 / 200 of them with --small."
    import datasets
    from atombert.mnli import load_mnli
    train = datasets.concatenate_datasets([load_mnli(str(C.shared_path(f)), 'train', verbose=False) for f in (C.MNLI_TRAIN_SAMPLE, MNLI_EXTRA)])
    train = train.shuffle(seed=0)                    # the label budgets take the first N: a random sample of both files
    dev = {name: load_mnli(str(C.shared_path(f)), f'validation_{name}', verbose=False) for name, f in T.SPLITS.items()}
    if args.small: train, dev = C.first(train, 300), {k: C.first(d, 200) for k, d in dev.items()}
    return train, dev

STUDY_SETTINGS = ('small', 'shards', 'preset', 'config_overrides', 'minutes', 'checkpoint_minutes', 'control_minutes', 'tokenizer',
                  'save_every', 'seeds', 'label_budgets')

def earlier_study(out:Path, args) -> dict|None:
    "The study already in `out`, whose measured pieces are kept; one run with other settings is refused, never overwritten."
    if not out.is_file(): return None
    try: res = json.loads(out.read_text())
    except json.JSONDecodeError as e: raise SystemExit(f'error: --out {out} is not JSON ({e}); move it away to start afresh')
    if not isinstance(res, dict) or res.get('benchmark') != 'wiki_transfer': raise SystemExit(f'error: --out {out} holds no wiki_transfer study; choose another --out')
    differ = [f'{k} {res["args"].get(k)!r} there, {getattr(args, k)!r} here' for k in STUDY_SETTINGS if res['args'].get(k) != getattr(args, k)]
    if differ: raise SystemExit(f"error: --out {out} holds a study with other settings ({'; '.join(differ)}); choose another --out")
    return res

def step_of(checkpoint:Path) -> int: return int(checkpoint.name.split('-')[1])

def pretrained(args, corpus, run:Path, minutes:float, tokenizer=None, budget:dict|None=None, until:int|None=None) -> dict:
    """One budgeted `pretrain` run in `run` (resumed if it was cut short), trained as far as step `until` (default: its end);
    its checkpoints with their training minutes. `budget`, the one an earlier run recorded, fixes the step count without a
    new probe: a run whose folder was lost is redone step for step."""
    from atombert.pretrain import pretrain
    from atombert.logs import read_metrics
    from atombert.trainer_state import checkpoints
    from atombert.training import Callback
    class StopAt(Callback):
        def after_step(self, state): return state['step'] >= until   # a checkpoint is written there; a later call goes on
    if budget and not (run/'run.json').exists():
        run.mkdir(parents=True, exist_ok=True); (run/'run.json').write_text(json.dumps(dict(budget=budget)))
    started = (run/'run.json').exists()
    end = (json.loads((run/'run.json').read_text()).get('budget') or {}).get('max_steps') if started else None
    reached = step_of(checkpoints(run)[-1]) if checkpoints(run) else 0
    if not started or reached < (until or end or math.inf):
        pretrain(str(corpus), str(run), preset=args.preset, config_overrides=args.config_overrides, eval_corpus=str(C.shared_path(HELD_OUT)), budget_minutes=minutes,
                 tokenizer=tokenizer and str(tokenizer), save_every=args.save_every, eval_every=args.save_every,
                 keep_checkpoints=10_000, cache_dir=str(Path(args.work)/'cache'), progress=False, resume=started,
                 callbacks=[StopAt()] if until else (), **({'vocab_size': 1000, 'batch_size': 16} if args.small else {}))
    rows = read_metrics(run)
    seconds = {r['step']: r['time'] for r in rows if r['split'] == 'train'}
    evals = {r['step']: r for r in rows if r['split'] == 'eval'}
    ckpts = [dict(step=step_of(p), path=str(p)) for p in checkpoints(run)]
    info = json.loads((run/'run.json').read_text())
    budget = info.get('budget') or {}
    def minutes(step):  # the step's share of the budget: a rerun, or a run paused by its host, gets the same minutes
        return step / budget['max_steps'] * budget['minutes'] if budget.get('max_steps') else seconds.get(step, float('nan')) / 60
    for c in ckpts: c.update(minutes=minutes(c['step']), wall_minutes=seconds.get(c['step'], float('nan')) / 60, held_out=evals.get(c['step']))
    return dict(run=str(run), budget=info.get('budget'), train_tokens=info['train_tokens'], checkpoints=ckpts,
                held_out_start=evals.get(0), curve=[{k: r[k] for k in ('step', 'mlm_accuracy', 'mlm_loss', 'unigram_accuracy', 'unigram_loss')}
                                                    | dict(minutes=minutes(r['step'])) for r in evals.values()])

def nearest(ckpts:list, minutes:float) -> dict:
    return min(ckpts, key=lambda c: abs(c['minutes'] - minutes))

def models_to_finetune(args, wiki:dict) -> list:
    "The untrained model, then the Wikipedia checkpoints nearest --checkpoint-minutes (each once), the longest-trained first."
    models = [dict(name='untrained', corpus=None, minutes=0.0, step=0, held_out=wiki['held_out_start'])]
    for m in sorted(args.checkpoint_minutes, reverse=True):   # a study cut short has measured its best-trained model
        c = nearest(wiki['checkpoints'], m)
        if c['step'] not in [x['step'] for x in models]:
            models.append(dict(name=f"Wikipedia {c['minutes']:.3g} min", corpus='wikipedia', **{k: c[k] for k in ('step', 'minutes', 'held_out')}))
    return models

def same_run(recorded:dict, rerun:dict) -> dict:
    "How far a redone pretraining run matches the recorded one: their held-out evaluations at the steps both reached."
    old = {c['step']: c for c in recorded['curve']}
    both = [(old[c['step']], c) for c in rerun['curve'] if c['step'] in old]
    diff = lambda k: max(abs(a[k] - b[k]) for a, b in both)
    return dict(steps=rerun['curve'][-1]['step'], evals_compared=len(both), max_abs_diff_mlm_accuracy=diff('mlm_accuracy'),
                max_abs_diff_mlm_loss=diff('mlm_loss'))

def main(argv=None):
    args = parse_args(argv)
    work = Path(args.work); work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    shards = small_shards(work) if args.small else Path(args.shards) if args.shards else C.shared_path('wikipedia')
    out = Path(args.out)
    earlier = earlier_study(out, args) or dict(rows=[], labels=[], control=None, total_minutes=0)
    measured = {r['model'] for r in earlier['rows']}
    if earlier['rows']: print(f"kept from {out}: {', '.join(sorted(measured))}; {len(earlier['labels'])} label budgets", flush=True)
    train, dev = mnli_data(args)
    label_budgets = sorted({min(n, len(train)) for n in args.label_budgets + [len(train)]}) if args.label_budgets else []
    labels_todo = [n for n in label_budgets if n not in [l['pairs'] for l in earlier['labels']]]
    bow = earlier.get('bag_of_words')
    if bow is None:
        print(f'bag of words on {len(train):,} pairs ...', flush=True)
        bow = T.bag_of_words(train, dev)
        print(f"  dev matched {bow['matched']:.2%}, mismatched {bow['mismatched']:.2%}", flush=True)

    if args.tokenizer and not (Path(args.tokenizer)/'tokenizer.json').is_file(): raise SystemExit(f'error: --tokenizer {args.tokenizer}: no tokenizer.json there')
    run, recorded = work/'pretrain-wikipedia', earlier.get('wikipedia')
    lost = recorded is not None and not (run/'run.json').exists()
    if recorded is None:
        print(f'pretraining {args.preset} on {shards} for {args.minutes:g} minutes ...', flush=True)
        wiki = pretrained(args, shards, run, args.minutes, tokenizer=args.tokenizer)
    else:   # only as far as the checkpoints still to finetune, on the recorded step count
        wiki = recorded
        plan = models_to_finetune(args, wiki)
        todo = [m for i, m in enumerate(plan) if m['name'] not in measured or (i < 2 and labels_todo)]
        until = max((m['step'] or 1 for m in todo), default=0)      # the untrained model takes its config and tokenizer from the run
        if lost and not args.tokenizer and (until or args.control_minutes):
            raise SystemExit(f'error: the pretraining run in {run} is gone and its tokenizer was trained there; a new one can differ '
                             '(one trained by an older atombert or another tokenizers version): pass --tokenizer, or start afresh with another --out')
        if until:
            print(f"pretraining {args.preset} on {shards} as far as step {until:,} of the recorded {wiki['budget']['max_steps']:,} ...", flush=True)
            again = pretrained(args, shards, run, args.minutes, tokenizer=args.tokenizer, budget=wiki['budget'], until=until)
            if lost:
                wiki = wiki | dict(rerun=same_run(wiki, again))
                print(f"  redone to step {until:,}: held-out MLM accuracy within {wiki['rerun']['max_abs_diff_mlm_accuracy']:.2g} of the "
                      f"recorded run at {wiki['rerun']['evals_compared']} evaluations", flush=True)
    print(f"  {wiki['budget']['max_steps']:,} steps, {wiki['train_tokens']:,} tokens of text", flush=True)
    models = models_to_finetune(args, wiki)
    from atombert.trainer_state import checkpoints
    local = {step_of(p): str(p) for p in checkpoints(run)}
    for i, m in enumerate(models):   # the models still to finetune are there (the untrained one is made from the run)
        if m['name'] not in measured or (i < 2 and labels_todo):
            m['path'] = str(T.untrained_model(args, run, work)) if m['corpus'] is None else local[m['step']]
    result = dict(benchmark='wiki_transfer', machine=C.machine_info('cpu'), args=vars(args), complete=False,
                  data=dict(pretraining=str(shards), held_out=HELD_OUT, train=[C.MNLI_TRAIN_SAMPLE, MNLI_EXTRA], train_examples=len(train),
                            dev={k: len(d) for k, d in dev.items()}),
                  wikipedia=wiki, control=earlier['control'], bag_of_words=bow, rows=earlier['rows'], labels=earlier['labels'])
    def save():  # after every finished piece: a study cut short (a session's end) still leaves its table, marked incomplete
        rows = result['rows']
        rows.sort(key=lambda r: (r['corpus'] is not None, r['corpus'] == 'control', r['pretrain_minutes']))   # untrained, Wikipedia by minutes, control
        untrained = rows[0]['summary']['matched']['mean']
        result.update(gain_over_untrained_points={r['model']: (r['summary']['matched']['mean'] - untrained) * 100 for r in rows[1:]},
                      over_bag_of_words_points={r['model']: (r['summary']['matched']['mean'] - bow['matched']) * 100 for r in rows},
                      total_minutes=earlier['total_minutes'] + (time.perf_counter() - t0) / 60)   # every run's minutes
        result['plot'] = str(plot(result, out.with_suffix('.png')))
        C.write_json(out, result)

    def finetuned(m, seed, n=None):
        data = C.first(train, n)
        r = T.finetuned_accuracy(Path(m['path']), work/'finetuned'/f"{m['corpus'] or 'untrained'}-step-{m['step']}-seed-{seed}-pairs-{len(data)}",
                                 data, dev, seed, None)
        print(f"  {m['name']:28s} {len(data):>6,} pairs, seed {seed}: dev matched {r['matched']:.2%}, mismatched "
              f"{r['mismatched']:.2%} ({(r['finetune_seconds'] or 0) / 60:.1f} min)", flush=True)
        return r
    def finetune_all(ms):
        for m in [m for m in ms if m['name'] not in measured]:
            runs = [finetuned(m, s) for s in args.seeds]
            result['rows'].append(dict(model=m['name'], corpus=m['corpus'], pretrain_minutes=m['minutes'], pretrain_steps=m['step'],
                                       held_out_mlm_accuracy=(m['held_out'] or {}).get('mlm_accuracy'),
                                       most_frequent_token_accuracy=(m['held_out'] or {}).get('unigram_accuracy'), runs=runs, summary=T.summarize(runs)))
            save()
    # the cheap and telling pieces first: untrained and the longest-trained model, then both with fewer labels (minutes),
    # then the shorter checkpoints, and the control's two hours of pretraining last
    print(f'finetuning on {len(train):,} pairs, seeds {args.seeds} ...', flush=True)
    finetune_all(models[:2])
    if labels_todo:
        print(f"fewer labels: {models[1]['name']} and untrained, seed {args.seeds[0]} ...", flush=True)
        for n in labels_todo:
            result['labels'].append(dict(pairs=n, **{m['name']: finetuned(m, args.seeds[0], None if n == len(train) else n) for m in models[:2]}))
            result['labels'].sort(key=lambda l: l['pairs'])
            save()
    finetune_all(models[2:])
    if args.control_minutes and not any(r['corpus'] == 'control' for r in result['rows']):
        corpus, _ = C.study_corpus(work)
        print(f'pretraining {args.preset} on the 1.1M-token study corpus for {args.control_minutes:g} minutes ...', flush=True)
        result['control'] = control = pretrained(args, corpus, work/'pretrain-control', args.control_minutes, tokenizer=args.tokenizer or run)
        c = control['checkpoints'][-1]
        finetune_all([dict(name=f"1.1M-token corpus {c['minutes']:.3g} min", corpus='control', **c)])
    result['complete'] = True
    save()
    report(result, args)
    print(f'wrote {out} and {result["plot"]}')
    return result

def report(result:dict, args):
    "The table and the lines under it."
    print()
    C.print_table([dict(model=r['model'], minutes=r['pretrain_minutes'], mlm=None if r['held_out_mlm_accuracy'] is None else r['held_out_mlm_accuracy'] * 100,
                        m=r['summary']['matched']['mean'] * 100, msd=r['summary']['matched']['sd'] * 100,
                        mm=r['summary']['mismatched']['mean'] * 100) for r in result['rows']]
                  + [dict(model='bag of words (logistic regression)', m=result['bag_of_words']['matched'] * 100, mm=result['bag_of_words']['mismatched'] * 100)],
                  [('model', 'model', ''), ('minutes', 'pretraining min', '.1f'), ('mlm', 'held-out MLM acc %', '.2f'),
                   ('m', 'dev matched %', '.2f'), ('msd', '± sd', '.2f'), ('mm', 'dev mismatched %', '.2f')])
    if result['labels']:
        print('\nfewer labels (dev matched %, seed ' + str(args.seeds[0]) + '): ' + '; '.join(
            f"{l['pairs']:,} pairs: " + ', '.join(f"{k} {v['matched'] * 100:.2f}" for k, v in l.items() if k != 'pairs') for l in result['labels']))
    print(f"finetuning: finetune's defaults, {result['data']['train_examples']:,} train pairs, seeds {args.seeds}; total {result['total_minutes']:.0f} minutes")

def plot(result:dict, path:Path) -> Path:
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3 if result['labels'] else 2, figsize=(17 if result['labels'] else 12, 4.6))
    ax = axes[0]
    for name, pre, style in (('Wikipedia (65M words)', result['wikipedia'], 'o-'), ('1.1M-token corpus', result['control'], 's--')):
        if not pre: continue
        curve = [c for c in pre['curve'] if c['step'] > 0]
        ax.plot([c['minutes'] for c in curve], [c['mlm_accuracy'] * 100 for c in curve], style, label=name)
    ref = result['wikipedia']['curve'][0]['unigram_accuracy'] * 100
    ax.axhline(ref, color='grey', ls=':', label='most frequent token')
    ax.set(title='held-out MLM accuracy (WikiText raw valid)', xlabel='pretraining minutes (2 CPU cores)', ylabel='%'); ax.legend(fontsize=8)
    ax = axes[1]
    for split, c in zip(T.SPLITS, ('C0', 'C1')):
        for corpus, marker in (('wikipedia', 'o-'), ('control', 's')):
            rs = [r for r in result['rows'] if r['corpus'] == corpus]
            if rs: ax.plot([r['pretrain_minutes'] for r in rs], [r['summary'][split]['mean'] * 100 for r in rs], marker, color=c,
                           label=f"{'Wikipedia' if corpus == 'wikipedia' else '1.1M tokens'}, {split}")
        ax.axhline(result['rows'][0]['summary'][split]['mean'] * 100, color=c, ls=':', label=f'untrained, {split}')
        ax.axhline(result['bag_of_words'][split] * 100, color=c, ls='--', alpha=0.6, label=f'bag of words, {split}')
    ax.set(title=f"MNLI dev accuracy ({result['data']['train_examples']:,} train pairs)", xlabel='pretraining minutes', ylabel='%')
    ax.set_xlim(left=0); ax.legend(fontsize=7, loc='center left')
    if result['labels']:
        ax = axes[2]
        for name in [k for k in result['labels'][0] if k != 'pairs']:
            ax.plot([l['pairs'] for l in result['labels']], [l[name]['matched'] * 100 for l in result['labels']], 'o-', label=name)
        ax.set_xscale('log')
        ax.set(title='fewer labels (dev matched)', xlabel='labelled MNLI pairs', ylabel='%'); ax.legend(fontsize=8)
    fig.tight_layout()
    return C.save_figure(fig, path)

if __name__ == '__main__':
    main()

"""Does pretraining transfer? MNLI dev accuracy of an untrained model and of the same model pretrained for growing
budgets, each finetuned the same way, beside a bag-of-words logistic regression.

One tokenizer (WordPiece trained on the pretraining text) and one finetuning recipe (`atombert.finetuning.finetune`'s
defaults unless the flags say otherwise) for every row:
- **untrained**: the `--preset` model as initialized (seed 0);
- **pretrained**: one run of `atombert.pretrain.pretrain` with every default (the CPU recipe, its default length: what
  `atombert pretrain --corpus DIR --eval-corpus FILE` runs) on `common.study_corpus` (WikiText-2 raw test + the
  unpaired text of the 20k MNLI train sample); its checkpoints at `--budgets` (fractions of the run) are the budgets;
- each finetuned on `../shared/data/mnli/train_sample_20k_ptbtok.tsv` with every seed of `--seeds`, and evaluated
  on the full `dev_matched.jsonl` and `dev_mismatched.jsonl`;
- **bag of words**: scikit-learn's logistic regression on the same 20k pairs: hypothesis unigrams and bigrams,
  the words the hypothesis shares with the premise, and the share of hypothesis words found in the premise.

`--mnli-layout pairs` writes each MNLI premise with its hypothesis into the pretraining text (one line per pair) instead
of unpaired, and `--tokenizer DIR` reuses another study's tokenizer, so that both studies finetune the same untrained
model and compare like with like.

`--token-objective rtd` pretrains with ELECTRA's replaced-token detection instead of MLM (its run and finetuned models
beside the MLM ones in `--work`; the untrained rows are shared), and `--pretrain-minutes` sets the run's length in
wall-clock minutes (a 40-step probe measures the speed first), so RTD and MLM compare at equal time.

    python bench/transfer.py                      # about 75 minutes on 2 cores
    python bench/transfer.py --token-objective rtd --pretrain-minutes 31 --out bench/results/transfer_rtd.json
    python bench/transfer.py --mnli-layout pairs --tokenizer runs/transfer/tokenizer-8000 --work runs/transfer-pairs
    python bench/transfer.py --small              # CI smoke size (preset tiny, a few steps, 300 pairs)
"""
import json, math, shutil, statistics, sys, time, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import torch
import common as C

SPLITS = {'matched': 'mnli/dev_matched.jsonl', 'mismatched': 'mnli/dev_mismatched.jsonl'}

def parse_args(argv=None):
    p = C.script_parser(__doc__, 'bench/results/transfer.json', 'preset tiny, 20 pretraining steps, 300 pairs, one seed')
    p.add_argument('--preset', default='small')
    p.add_argument('--vocab-size', type=int, default=8000)
    p.add_argument('--pretrain-steps', type=int, default=0, help="length of the pretraining run (0: atombert pretrain's default, the CPU budget)")
    p.add_argument('--token-objective', choices=('mlm', 'rtd'), default='mlm', help='pretraining token objective')
    p.add_argument('--pretrain-minutes', type=float, default=0, help='length of the pretraining run in minutes, '
                   'measured by a speed probe (0: --pretrain-steps)')
    p.add_argument('--mnli-layout', choices=('texts', 'pairs'), default='texts', help="the MNLI sample's text in the "
                   "pretraining corpus: premises and hypotheses unpaired, or each premise with its hypothesis (common.study_corpus)")
    p.add_argument('--tokenizer', default=None, help='a trained tokenizer folder to use instead of training one '
                   '(the same tokenizer as another study: its untrained model is then the same model)')
    p.add_argument('--budgets', default='0.5,1', help='checkpoints to finetune, as fractions of the pretraining run')
    p.add_argument('--seeds', default='0,1', help='finetuning seeds')
    p.add_argument('--finetune-epochs', type=float, default=None, help="default: atombert.finetuning.finetune's")
    p.add_argument('--finetune-lrs', default='1e-4,3e-4,1e-3', help='finetuning LRs tried on the untrained and the fully '
                   'pretrained model (seed 0); the best (mean dev matched of the two) finetunes every row')
    p.add_argument('--finetune-batch-size', type=int, default=None, help="default: atombert.finetuning.finetune's")
    p.add_argument('--train-examples', type=int, default=0, help='first N pairs of the train sample (0: all 20k)')
    p.add_argument('--dev-examples', type=int, default=0, help='first N pairs of each dev set (0: all)')
    p.add_argument('--work', default='runs/transfer', help='pretraining run, finetuned models, tokenizer and cache')
    args = p.parse_args(argv)
    if args.small:
        args.preset, args.vocab_size, args.pretrain_steps, args.train_examples, args.dev_examples = 'tiny', 1000, 20, 300, 200
        args.seeds, args.budgets, args.finetune_epochs = '0', '0.5,1', args.finetune_epochs or 1
        args.finetune_lrs = '1e-3'
    try:
        args.budgets = sorted({float(b) for b in args.budgets.split(',') if b.strip()})
        args.seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
        args.finetune_lrs = [float(s) for s in args.finetune_lrs.split(',') if s.strip()]
    except ValueError as e: raise SystemExit(f'error: --budgets, --seeds and --finetune-lrs are comma-separated numbers ({e})')
    if not args.finetune_lrs or not all(lr > 0 for lr in args.finetune_lrs): raise SystemExit('error: --finetune-lrs must be numbers > 0')
    if not args.budgets or not all(0 < b <= 1 for b in args.budgets): raise SystemExit('error: --budgets must be fractions in (0, 1]')
    if not args.seeds: raise SystemExit('error: --seeds names no seed')
    for name in ('vocab_size',):
        if getattr(args, name) <= 0: raise SystemExit(f'error: --{name.replace("_", "-")} must be > 0')
    for name in ('pretrain_steps', 'pretrain_minutes', 'train_examples', 'dev_examples'):
        if getattr(args, name) < 0: raise SystemExit(f'error: --{name.replace("_", "-")} must be >= 0')
    from atombert.config import PRESETS
    if args.preset not in PRESETS: raise SystemExit(f'error: --preset {args.preset!r} is not one of {list(PRESETS)}')
    C.set_threads(args)
    return args

# ---------------------------------------------------------------- bag of words

def bag_of_words(train, dev:dict) -> dict:
    """Logistic regression on hypothesis unigrams + bigrams, the hypothesis words also in the premise, and the share
    of hypothesis words found in the premise (scikit-learn; C chosen on a tenth of the train set)."""
    import re, scipy.sparse as sp
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    words = lambda s: re.findall(r"[a-z0-9']+", s.lower())
    def overlap_text(p, h): ps = set(words(p)); return ' '.join(w for w in words(h) if w in ps)
    def share(p, h): hs = words(h); ps = set(words(p)); return sum(w in ps for w in hs) / max(len(hs), 1)
    hyp = CountVectorizer(ngram_range=(1, 2), min_df=2, binary=True)
    ovl = CountVectorizer(min_df=2, binary=True, token_pattern=r"[a-z0-9']+")
    def features(d, fit=False):
        P, H = list(d['premise']), list(d['hypothesis'])
        O = [overlap_text(p, h) for p, h in zip(P, H)]
        dense = np.array([[share(p, h), 1 - share(p, h)] for p, h in zip(P, H)])
        if fit: return sp.hstack([hyp.fit_transform(H), ovl.fit_transform(O), sp.csr_matrix(dense)]).tocsr()
        return sp.hstack([hyp.transform(H), ovl.transform(O), sp.csr_matrix(dense)]).tocsr()
    X, y = features(train, fit=True), np.array(train['label'])
    n_val = max(1, len(y) // 10)
    def fit(c, X, y): return LogisticRegression(C=c, max_iter=2000).fit(X, y)
    scores = {c: float((fit(c, X[n_val:], y[n_val:]).predict(X[:n_val]) == y[:n_val]).mean()) for c in (0.1, 0.3, 1.0)}
    best_c = max(scores, key=scores.get)
    clf = fit(best_c, X, y)
    return dict(C=best_c, validation=scores, features=X.shape[1],
                **{name: float((clf.predict(features(d)) == np.array(d['label'])).mean()) for name, d in dev.items()})

# ---------------------------------------------------------------- the models

def pretrain_run(args, corpus, held_out, tokenizer, work:Path) -> tuple[Path, dict]:
    "One pretraining run with `pretrain`'s defaults; a checkpoint at every budget. Returns (run dir, what ran)."
    from atombert.pretrain import pretrain
    from atombert.logs import read_metrics
    common = dict(preset=args.preset, tokenizer=str(tokenizer), eval_corpus=str(held_out), cache_dir=str(work/'cache'),
                  progress=False, device=args.device, token_objective=args.token_objective)
    import inspect
    run = work/run_name(args)
    inputs = dict(common, corpus=str(corpus), pretrain_minutes=args.pretrain_minutes, pretrain_steps=args.pretrain_steps,
                  budgets=list(args.budgets), **{k: getattr(args, k, None) for k in ('vocab_size', 'mnli_layout')})
    for k in ('cache_dir', 'progress', 'device'): inputs.pop(k)              # where and how it ran, not what it is
    C.same_inputs(run, inputs)
    sec_per_step = None
    if args.pretrain_minutes and not (run/'model.safetensors').exists():
        sec_per_step = C.seconds_per_step(corpus, work/f'probe-{args.token_objective}', 40, **common)
        print(f'  {sec_per_step:.3f} s per step: {args.pretrain_minutes:g} min is {_round_steps(args.pretrain_minutes * 60 / sec_per_step):,} steps', flush=True)
    steps = (_round_steps(args.pretrain_minutes * 60 / sec_per_step) if sec_per_step else
             json.loads((run/'run.json').read_text())['args']['max_steps'] if (run/'model.safetensors').exists() else
             args.pretrain_steps or inspect.signature(pretrain).parameters['max_steps'].default)
    budget_steps = sorted({max(1, round(b * steps)) for b in args.budgets})
    save_every = math.gcd(*budget_steps)
    if not (run/'model.safetensors').exists():
        shutil.rmtree(run, ignore_errors=True)
        pretrain(str(corpus), str(run), max_steps=steps, save_every=save_every, keep_checkpoints=steps // save_every + 1,
                 eval_every=save_every, log_every=math.gcd(save_every, max(1, steps // 100)), **common)   # a time at every budget
        C.record_inputs(run, inputs)
    rows = read_metrics(run)
    minutes = {r['step']: r['time'] / 60 for r in rows if r['split'] == 'train'}
    evals = {r['step']: r for r in rows if r['split'] == 'eval'}
    ckpts = {int(p.name.split('-')[1]): p for p in (run/'checkpoints').glob('step-*')}
    budgets = [dict(step=s, minutes=minutes.get(s), checkpoint=str(ckpts[s]), held_out=evals.get(s),
                    probe_minutes=sec_per_step and s * sec_per_step / 60) for s in budget_steps]   # the budget as planned
    return run, dict(steps=steps, budgets=budgets, held_out_start=evals.get(0), probe_seconds_per_step=sec_per_step,
                     run_json=json.loads((run/'run.json').read_text()))

def _round_steps(steps:float) -> int:
    "A step count from a time budget, rounded so that the budgets' checkpoints fall on round steps (not every step)."
    unit = 100 if steps >= 2000 else 10
    return max(unit, round(steps / unit) * unit)

def run_name(args) -> str:
    "The pretraining run's folder in --work (MLM's keeps the name it had before RTD existed)."
    return 'pretrain' if args.token_objective == 'mlm' else f'pretrain-{args.token_objective}'


def small_pretrained(work:Path) -> Path:
    "A tiny model pretrained for 20 steps on the builtin corpus (CI)."
    from atombert.pretrain import pretrain
    run = work/'pretrained'
    if not (run/'model.safetensors').exists():
        pretrain('builtin', str(run), preset='tiny', vocab_size=1000, max_steps=20, batch_size=8, eval_every=0,
                 cache_dir=str(work/'cache'), progress=False)
    return run

def untrained_model(args, run:Path, work:Path) -> Path:
    "The pretraining run's model as initialized (same config, tokenizer and seed)."
    from atombert.config import AtomBertConfig
    from atombert.model import AtomBertForPreTraining
    from atombert.tokenizer import load_tokenizer
    from atombert.tokenizer import tokenizer_fingerprint
    d = work/'untrained'
    config = AtomBertConfig.from_dict(json.loads((run/'config.json').read_text())['atombert']).replace(token_objective='mlm')
    seed = json.loads((run/'run.json').read_text())['args']['seed']
    inputs = dict(config=config.to_dict(), seed=seed, tokenizer=tokenizer_fingerprint(load_tokenizer(run)))   # any run of that model
    C.same_inputs(d, inputs)
    if not (d/'model.safetensors').exists():
        torch.manual_seed(seed)
        AtomBertForPreTraining(config).save_pretrained(d, tokenizer=load_tokenizer(run))
        C.record_inputs(d, inputs)
    return d

def finetuned_accuracy(model_dir:Path, out:Path, train, dev:dict, seed:int, lr:float|None, **finetune_kw) -> dict:
    "Finetune `model_dir` into `out` (`finetune`'s defaults but for `finetune_kw`) and evaluate it on every `dev` set; cached in `out`."
    from atombert.finetuning import finetune
    from atombert.evaluation import evaluate_mnli
    from atombert.evaluation import data_fingerprint
    kw = {k: v for k, v in finetune_kw.items() if v is not None}
    done = out/'transfer_result.json'
    inputs = dict(model=str(model_dir), seed=seed, lr=lr, finetune=kw, train=data_fingerprint(train),
                  dev={name: data_fingerprint(d) for name, d in dev.items()})
    C.same_inputs(out, inputs)                                  # the same folder name from other data or settings: refused
    if done.exists(): return json.loads(done.read_text())      # a rerun (or a restarted study) keeps what it measured
    t, seconds = time.perf_counter(), None
    if not (out/'model.safetensors').exists():                  # written last: a finished finetuning is only evaluated
        shutil.rmtree(out, ignore_errors=True)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            finetune(model_dir, train, None, out, seed=seed, lr=lr, progress=False, **kw)
        seconds = time.perf_counter() - t
    acc = {name: evaluate_mnli(str(out), None, d)['accuracy'] for name, d in dev.items()}
    shutil.rmtree(out/'checkpoints', ignore_errors=True)       # the finetuned model stays; its resume state need not
    result = dict(seed=seed, lr=lr, finetune_seconds=seconds, **acc)
    C.record_inputs(out, inputs)
    done.write_text(json.dumps(result))
    return result

# ---------------------------------------------------------------- output

def summarize(runs:list) -> dict:
    out = {}
    for split in SPLITS:
        v = [r[split] for r in runs]
        out[split] = dict(mean=statistics.mean(v), min=min(v), max=max(v), sd=statistics.stdev(v) if len(v) > 1 else 0.0)
    return out

def plot(result:dict, path:Path) -> Path:
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = result['rows']
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for split, c in zip(SPLITS, ('C0', 'C1')):
        xs = [r['pretrain_minutes'] for r in rows]
        mean = [r['summary'][split]['mean'] * 100 for r in rows]
        lo = [m - r['summary'][split]['min'] * 100 for m, r in zip(mean, rows)]
        hi = [r['summary'][split]['max'] * 100 - m for m, r in zip(mean, rows)]
        axes[0].errorbar(xs, mean, yerr=[lo, hi], fmt='o-', capsize=4, color=c, label=f'finetuned, dev {split} (mean, min–max over seeds)')
        axes[0].axhline(result['bag_of_words'][split] * 100, ls='--', color=c, alpha=0.7, label=f'bag of words, dev {split}')
    axes[0].axhline(100 / 3, ls=':', color='gray', label='chance')
    axes[0].set(title='MNLI dev accuracy after finetuning on 20k pairs', xlabel='pretraining minutes (0 = untrained)', ylabel='accuracy %')
    axes[0].legend(fontsize=7); axes[0].grid(alpha=0.3)
    pts = [b for b in result['pretraining']['budgets'] if b['held_out']]
    start = result['pretraining']['held_out_start']
    if start: pts = [dict(minutes=0.0, held_out=start)] + pts
    who = '' if result.get('token_objective', 'mlm') == 'mlm' else " (the RTD generator's)"
    axes[1].plot([p['minutes'] for p in pts], [p['held_out']['mlm_accuracy'] * 100 for p in pts], 'o-', label=f'held-out MLM accuracy{who}')
    if pts:
        axes[1].axhline(pts[-1]['held_out']['unigram_accuracy'] * 100, ls='--', c='k', label='most frequent token')
    axes[1].set(title='pretraining: held-out MLM accuracy (WikiText-2 valid)', xlabel='pretraining minutes', ylabel='accuracy %')
    axes[1].legend(fontsize=8); axes[1].grid(alpha=0.3)
    fig.tight_layout()
    return C.save_figure(fig, path)

def study_data(args, work:Path, layout:str='texts', tokenizer=None):
    """(pretraining folder, held-out file, tokenizer folder, train pairs, dev sets) of a study in `work`: the corpus
    of `common.study_corpus`, the tokenizer given or trained on it once, the 20k train sample and both dev sets
    (cut to `args.train_examples` / `args.dev_examples` when set)."""
    from atombert.mnli import load_mnli
    from atombert.tokenizer import train_tokenizer, save_tokenizer
    corpus, held_out = C.study_corpus(work, layout=layout)
    tok_dir = Path(tokenizer) if tokenizer else work/f'tokenizer-{args.vocab_size}'
    if tokenizer and not (tok_dir/'tokenizer.json').is_file(): raise SystemExit(f'error: --tokenizer {tok_dir}: no tokenizer.json there')
    if not (tok_dir/'tokenizer.json').exists():
        save_tokenizer(train_tokenizer([str(p) for p in sorted(corpus.iterdir())], vocab_size=args.vocab_size,
                                       show_progress=False), tok_dir)
    train = load_mnli(str(C.shared_path(C.MNLI_TRAIN_SAMPLE)), 'train', verbose=False)
    dev = {name: load_mnli(str(C.shared_path(f)), f'validation_{name}', verbose=False) for name, f in SPLITS.items()}
    train, dev = C.first(train, args.train_examples), {k: C.first(d, args.dev_examples) for k, d in dev.items()}
    return corpus, held_out, tok_dir, train, dev

def main(argv=None):
    args = parse_args(argv)
    work = Path(args.work); work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    corpus, held_out, tokenizer, train, dev = study_data(args, work, args.mnli_layout, args.tokenizer)
    print(f'bag of words on {len(train):,} pairs ...', flush=True)
    bow = bag_of_words(train, dev)
    print(f"  dev matched {bow['matched']:.2%}, mismatched {bow['mismatched']:.2%} (C={bow['C']})", flush=True)

    length = f'{args.pretrain_minutes:g} minutes' if args.pretrain_minutes else f'{args.pretrain_steps or "the default"} steps'
    print(f'pretraining {args.preset} with {args.token_objective.upper()} ({length}) ...', flush=True)
    run, pre = pretrain_run(args, corpus, held_out, tokenizer, work)
    models = [dict(name='untrained', step=0, minutes=0.0, path=untrained_model(args, run, work), held_out=pre['held_out_start'])]
    label = '' if args.token_objective == 'mlm' else f' ({args.token_objective.upper()})'
    models += [dict(name=f'pretrained{label} {b["step"]} steps', step=b['step'], minutes=b['minutes'], path=Path(b['checkpoint']),
                    held_out=b['held_out'], prefix='' if args.token_objective == 'mlm' else f'{args.token_objective}-')
               for b in pre['budgets']]
    done = {}
    def finetuned(m, seed, lr):
        key = (m['step'], seed, lr)
        if key not in done:
            r = done[key] = finetuned_accuracy(m['path'], work/'finetuned'/f"{m.get('prefix', '')}step-{m['step']}-seed-{seed}-lr-{lr:g}-epochs-{args.finetune_epochs or 'default'}", train, dev, seed, lr,
                                                  epochs=args.finetune_epochs, batch_size=args.finetune_batch_size)
            print(f"  {m['name']:24s} lr {lr:g} seed {seed}: dev matched {r['matched']:.2%}, mismatched {r['mismatched']:.2%} "
                  f"({(r['finetune_seconds'] or 0) / 60:.1f} min)", flush=True)
        return done[key]
    ends = [models[0], models[-1]]
    print(f'finetuning LR: {args.finetune_lrs} on the untrained and the fully pretrained model, seed {args.seeds[0]} ...', flush=True)
    lr_sweep = [dict(lr=lr, **{m['name']: finetuned(m, args.seeds[0], lr) for m in ends}) for lr in args.finetune_lrs]
    best_lr = max(args.finetune_lrs, key=lambda lr: statistics.mean(finetuned(m, args.seeds[0], lr)['matched'] for m in ends))
    print(f'every model at lr {best_lr:g}, seeds {args.seeds} ...', flush=True)
    rows = []
    for m in models:
        runs = [finetuned(m, seed, best_lr) for seed in args.seeds]
        rows.append(dict(model=m['name'], pretrain_steps=m['step'], pretrain_minutes=m['minutes'] or 0.0,
                         held_out_mlm_accuracy=(m['held_out'] or {}).get('mlm_accuracy'),
                         most_frequent_token_accuracy=(m['held_out'] or {}).get('unigram_accuracy'),
                         runs=runs, summary=summarize(runs)))
    defaults = C.finetune_defaults('epochs', 'lr', 'batch_size', 'warmup')
    recipe = {**defaults, 'lr': best_lr, **{k: v for k, v in dict(epochs=args.finetune_epochs, batch_size=args.finetune_batch_size).items() if v is not None}}
    out = Path(args.out)
    result = dict(benchmark='transfer', token_objective=args.token_objective, machine=C.machine_info(args.device), args=vars(args), finetune_recipe=recipe,
                  data=dict(pretraining=str(corpus), held_out=str(held_out), train=C.MNLI_TRAIN_SAMPLE, train_examples=len(train),
                            dev={k: len(d) for k, d in dev.items()}),
                  pretraining=pre, bag_of_words=bow, lr_sweep=lr_sweep, best_lr=best_lr, rows=rows, total_minutes=(time.perf_counter() - t0) / 60)
    base = rows[0]['summary']['matched']['mean']
    result['gain_over_untrained_points'] = {r['model']: (r['summary']['matched']['mean'] - base) * 100 for r in rows[1:]}
    result['plot'] = str(plot(result, out.with_suffix('.png')))
    print()
    C.print_table([dict(model=r['model'], minutes=r['pretrain_minutes'], mlm=None if r['held_out_mlm_accuracy'] is None else r['held_out_mlm_accuracy'] * 100,
                        m=r['summary']['matched']['mean'] * 100, msd=r['summary']['matched']['sd'] * 100,
                        mm=r['summary']['mismatched']['mean'] * 100, mmsd=r['summary']['mismatched']['sd'] * 100) for r in rows]
                  + [dict(model='bag of words (logistic regression)', m=bow['matched'] * 100, mm=bow['mismatched'] * 100)],
                  [('model', 'model', ''), ('minutes', 'pretraining min', '.1f'), ('mlm', 'held-out MLM acc %', '.2f'),
                   ('m', 'dev matched %', '.2f'), ('msd', '± sd', '.2f'), ('mm', 'dev mismatched %', '.2f'), ('mmsd', '± sd', '.2f')])
    print('\nfinetuning LR sweep (seed ' + str(args.seeds[0]) + '), dev matched %: ' + '; '.join(
        f"lr {r['lr']:g}: " + ', '.join(f"{k} {v['matched'] * 100:.2f}" for k, v in r.items() if k != 'lr') for r in lr_sweep))
    print(f"finetuning: {recipe}, seeds {args.seeds}, {len(train):,} train pairs; "
          f"dev {', '.join(f'{k} {v:,}' for k, v in result['data']['dev'].items())}")
    print(f"wrote {C.write_json(out, result)} and {result['plot']} ({result['total_minutes']:.0f} min in all)")
    return result

if __name__ == '__main__': main()

"""Pretraining recipes side by side at the same wall-clock budget: which one leaves the unigram plateau on 2 CPU cores?

Every recipe pretrains `--preset` (default small) from the same initialization on the same text with the same
tokenizer, for `--minutes` of training each (`pretrain(budget_minutes=)`: a probe of the same loop turns the minutes
into a step count, recorded in the run). The text is `--corpus`: `study` (default: the 1.1M-token study corpus,
WikiText-2 raw test + the text of the 20k MNLI train sample, `common.study_corpus`) or any corpus `pretrain` reads,
such as the Wikipedia shards. Held out on WikiText-2 raw validation (WikiText-103's too, never in either corpus),
always scored the same way (15% single-token masking, the same masked tokens for every recipe:
`atombert.pretrain.HELD_OUT_MASKING`), beside the unigram references: the cross-entropy of the training text's token
frequencies and the accuracy of always predicting its most frequent token. A model that has learned only word
frequencies sits on those lines.

    python bench/pretrain_recipe.py                       # the MLM recipes, 5 minutes each (about 40 minutes on 2 cores)
    python bench/pretrain_recipe.py --recipes base,mask30-single --minutes 3
    python bench/pretrain_recipe.py --corpus ../shared/data/wikipedia --tokenizer bench/studies/wiki_tokenizer \\
        --recipes base,no-sharing --minutes 12             # on 65M words of Wikipedia
    python bench/pretrain_recipe.py --small               # CI smoke size: preset tiny, a few steps, two recipes
"""
import json, shutil, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C

# The base is the recipe today's defaults describe (pretrain's CPU recipe); each other recipe changes one or two knobs
# of it (pretrain's arguments). `config` entries are config overrides, applied over the base's.
BASE = dict(seq_len=64, batch_size=64, grad_accum=1, lr=1e-3, schedule='linear', warmup=0.1, beta2=0.999,
            weight_decay=0.01, clip_grad=1.0, mlm_probability=0.15, ngram=3, objective='sop', token_objective='mlm',
            config={'norm': 'pre', 'initializer_range': 0.05})
RECIPES = {
    'base': {},
    'post-ln': dict(config={'norm': 'post', 'initializer_range': 0.02}),           # ALBERT's own layout and init
    'no-sharing': dict(config={'sharing': 'none'}),                                 # BERT's layers: 4× the weights, same compute
    'emb128': dict(config={'embedding_size': 128}),                                 # ALBERT's embedding width (the MLM head's too)
    'lr3e-3': dict(lr=3e-3),                                                        # a faster optimizer
    'mask30-single': dict(mlm_probability=0.3, ngram=1),                            # twice the predictions, no spans
    'no-sop': dict(objective='none'),                                               # every gradient to MLM
    'seq128-batch32': dict(seq_len=128, batch_size=32),                             # longer rows, fewer of them
    'batch128-lr2e-3': dict(grad_accum=4, lr=2e-3),                                 # 4× the tokens per step
    'combined': dict(lr=2e-3, beta2=0.98, warmup=0.06, mlm_probability=0.3, ngram=1),
    # ELECTRA's replaced-token detection at the CPU recipe's shape: with 3-token spans (pretrain's default) or single tokens
    'rtd': dict(token_objective='rtd'),
    'rtd-single': dict(token_objective='rtd', ngram=1),
}
MLM_RECIPES = ['base', 'post-ln', 'mask30-single', 'no-sop', 'seq128-batch32', 'batch128-lr2e-3', 'combined']   # the default set

def parse_args(argv=None):
    p = C.script_parser(__doc__, 'bench/results/pretrain_recipe.json', 'preset tiny, 2 recipes, a few steps')
    p.add_argument('--recipes', default=','.join(MLM_RECIPES), help=f'comma-separated, from: {", ".join(RECIPES)} (default: the MLM ones)')
    p.add_argument('--minutes', type=float, default=5.0, help='training minutes per recipe')
    p.add_argument('--preset', default='small')
    p.add_argument('--corpus', default='study', help="study (the 1.1M-token study corpus) or a corpus pretrain reads: a file, folder, glob")
    p.add_argument('--tokenizer', default=None, help='tokenizer directory (default: trained on the corpus, once, kept in --work)')
    p.add_argument('--cache', default=None, help='token cache (default: --work/cache); reuse one to skip pretokenizing')
    p.add_argument('--vocab-size', type=int, default=8000)
    p.add_argument('--eval-every', type=int, default=250, help='steps between held-out evaluations')
    p.add_argument('--eval-batches', type=int, default=30, help='held-out batches of 32 per evaluation')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--work', default='runs/pretrain_recipe', help='runs, tokenizer and token cache')
    p.add_argument('--replot', default=None, help='only redraw the plot of this results JSON (beside it)')
    args = p.parse_args(argv)
    if args.replot: return args
    if args.small:
        args.preset, args.vocab_size, args.minutes, args.eval_every, args.eval_batches = 'tiny', 1000, 0.05, 10, 2
        if args.recipes == ','.join(MLM_RECIPES): args.recipes = 'base,mask30-single'
    args.recipes = [r.strip() for r in args.recipes.split(',') if r.strip()]
    if unknown := [r for r in args.recipes if r not in RECIPES]:
        raise SystemExit(f'error: unknown recipe(s) {unknown}; choose from {list(RECIPES)}')
    for name in ('minutes', 'vocab_size', 'eval_every', 'eval_batches'):
        if not getattr(args, name) > 0: raise SystemExit(f'error: --{name.replace("_", "-")} must be > 0, got {getattr(args, name)}')
    from atombert.config import PRESETS
    if args.preset not in PRESETS: raise SystemExit(f'error: --preset {args.preset!r} is not one of {list(PRESETS)}')
    C.set_threads(args)
    return args

def recipe_kwargs(name:str, preset:str) -> dict:
    "`pretrain` arguments of recipe `name` (sequence length capped at the preset's positions)."
    from atombert.config import AtomBertConfig
    r = {**BASE, **RECIPES[name]}
    r['config_overrides'] = {**BASE['config'], **r.pop('config')}
    r['seq_len'] = min(r['seq_len'], AtomBertConfig.preset(preset).max_position_embeddings)
    return r

def minutes_at(step:int, train:list) -> float:
    "Training minutes at `step`, interpolated between the logged training rows (evaluations fall between them)."
    import numpy as np
    return float(np.interp(step, [0] + [r['step'] for r in train], [0.0] + [r['time'] / 60 for r in train]))

def run_recipe(name, args, tokenizer, corpus, held_out, work:Path) -> dict:
    "Pretrain for the budget (its probe fixes the steps); the held-out curve with the minutes each point took."
    from atombert.pretrain import pretrain
    from atombert.logs import read_metrics
    kw = recipe_kwargs(name, args.preset)
    run, spec = work/name, dict(recipe=name, kwargs=kw, minutes=args.minutes, corpus=str(corpus), held_out=str(held_out),
                                preset=args.preset, tokenizer=str(tokenizer), seed=args.seed, eval_every=args.eval_every,
                                eval_batches=args.eval_batches)
    done = run/'recipe.json'                       # a finished run of the same recipe is reused: the study resumes
    if done.exists() and json.loads(done.read_text())['spec'] == json.loads(json.dumps(spec)):
        wall = json.loads(done.read_text())['wall_seconds']
    else:
        shutil.rmtree(run, ignore_errors=True)
        t0 = time.perf_counter()
        pretrain(str(corpus), str(run), preset=args.preset, tokenizer=str(tokenizer), eval_corpus=str(held_out), seed=args.seed,
                 cache_dir=args.cache or str(work/'cache'), progress=False, device=args.device, budget_minutes=args.minutes,
                 eval_every=args.eval_every, eval_batches=args.eval_batches, log_every=10, **kw)
        wall = time.perf_counter() - t0
        C.write_json(done, dict(spec=spec, wall_seconds=wall))
    budget = json.loads((run/'run.json').read_text())['budget']
    sec_per_step, steps = budget['step_s'], budget['max_steps']
    rows = read_metrics(run)
    train = [r for r in rows if r['split'] == 'train']
    curve = [dict(step=r['step'], minutes=minutes_at(r['step'], train), **{k: v for k, v in r.items() if k not in ('step', 'split')})
             for r in rows if r['split'] == 'eval']
    last = curve[-1]
    return dict(recipe=name, kwargs=kw, probe_sec_per_step=sec_per_step, steps=steps, wall_seconds=wall,
                tokens_per_step=kw['batch_size'] * kw['grad_accum'] * kw['seq_len'], curve=curve,
                final=last, accuracy_over_unigram=last['mlm_accuracy'] / max(last['unigram_accuracy'], 1e-9),
                nats_below_unigram=last['unigram_loss'] - last['mlm_loss'],
                train=[{k: r[k] for k in ('step', 'time', 'mlm_loss', 'mlm_accuracy') if k in r} for r in rows if r['split'] == 'train'])

def plot(results:list, path:Path) -> Path:
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    for r in results:
        c = r['curve']
        for ax, key in zip(axes, ('mlm_accuracy', 'mlm_loss')):
            # x: the budget each point used, from the recipe's speed probe (the wall clock can be slowed by other work)
            ax.plot([p['step'] * r['probe_sec_per_step'] / 60 for p in c], [p[key] for p in c], 'o-', ms=3, label=r['recipe'])
    ref = results[0]['final']
    axes[0].axhline(ref['unigram_accuracy'], ls='--', c='k', label='most frequent token')
    axes[0].axhline(3 * ref['unigram_accuracy'], ls=':', c='k', label='3× that')
    axes[1].axhline(ref['unigram_loss'], ls='--', c='k', label='unigram cross-entropy')
    axes[0].set(title='held-out MLM accuracy (15% single-token masking)', xlabel='training minutes (steps × probed s/step)', ylabel='accuracy')
    axes[1].set(title='held-out MLM loss', xlabel='training minutes (steps × probed s/step)', ylabel='nats')
    for ax in axes: ax.legend(fontsize=8); ax.grid(alpha=0.3)
    fig.tight_layout()
    return C.save_figure(fig, path)

def main(argv=None):
    args = parse_args(argv)
    if args.replot:
        res = json.loads(Path(args.replot).read_text())
        for r in res['results']:
            for p in r['curve']: p['minutes'] = minutes_at(p['step'], r['train'])
        res['plot'] = str(plot(res['results'], Path(args.replot).with_suffix('.png')))
        C.write_json(args.replot, res); print(f"redrew {res['plot']}")
        return res
    from atombert.tokenizer import train_tokenizer, save_tokenizer
    work = Path(args.work); work.mkdir(parents=True, exist_ok=True)
    if args.corpus == 'study': corpus, held_out = C.study_corpus(work)
    else: corpus, held_out = Path(args.corpus), C.shared_path(C.WIKITEXT_RAW[0])
    tokenizer = Path(args.tokenizer) if args.tokenizer else work/f'tokenizer-{args.vocab_size}'
    if not (tokenizer/'tokenizer.json').exists():   # trained once: every recipe (and a rerun) uses the same ids
        if args.tokenizer: raise SystemExit(f'error: --tokenizer {tokenizer} holds no tokenizer.json')
        from atombert.corpora import load_corpus
        save_tokenizer(train_tokenizer(load_corpus(str(corpus)).texts(), vocab_size=args.vocab_size, show_progress=False), tokenizer)
    print(f'{len(args.recipes)} recipes × {args.minutes:g} min, preset {args.preset}, {args.threads} threads; '
          f'corpus {corpus}, held out {held_out}', flush=True)
    results = []
    for name in args.recipes:
        r = run_recipe(name, args, tokenizer, corpus, held_out, work)
        results.append(r)
        f = r['final']
        print(f"  {name:16s} {r['steps']:5d} steps  held-out MLM acc {f['mlm_accuracy']:.2%} (×{r['accuracy_over_unigram']:.2f} "
              f"the most frequent token), loss {f['mlm_loss']:.3f} ({r['nats_below_unigram']:+.3f} nats under unigram)", flush=True)
    print()
    C.print_table([dict(recipe=r['recipe'], steps=r['steps'], tokens=r['tokens_per_step'], minutes=r['final']['minutes'],
                        acc=r['final']['mlm_accuracy'] * 100, ratio=r['accuracy_over_unigram'], loss=r['final']['mlm_loss'],
                        below=r['nats_below_unigram'], sop=r['final'].get('sop_accuracy'),
                        rtd=r['final'].get('rtd_accuracy'), never=None if 'replaced' not in r['final'] else 1 - r['final']['replaced'],
                        recall=r['final'].get('replaced_recall')) for r in results],
                  [('recipe', 'recipe', ''), ('steps', 'steps', ',d'), ('tokens', 'tokens/step', ',d'), ('minutes', 'minutes', '.1f'),
                   ('acc', 'MLM acc %', '.2f'), ('ratio', '× most-frequent', '.2f'), ('loss', 'MLM loss', '.3f'),
                   ('below', 'nats under unigram', '+.3f'), ('sop', 'SOP acc', '.3f')]
                  + ([('rtd', 'RTD acc', '.3f'), ('never', '"never replaced"', '.3f'), ('recall', 'replaced caught', '.3f')]
                     if any('rtd_accuracy' in r['final'] for r in results) else []))
    ref = results[0]['final']
    print(f"\nreferences on the same held-out tokens: unigram cross-entropy {ref['unigram_loss']:.3f} nats, "
          f"most frequent token {ref['unigram_accuracy']:.2%}")
    best = max(results, key=lambda r: r['final']['mlm_accuracy'])
    out = Path(args.out)
    result = dict(benchmark='pretrain_recipe', machine=C.machine_info(args.device), args=vars(args), base=BASE,
                  corpus=dict(train=str(corpus), held_out=str(held_out)), results=results, best=best['recipe'],
                  plot=str(plot(results, out.with_suffix('.png'))))
    print(f"best: {best['recipe']} ({best['final']['mlm_accuracy']:.2%}); wrote {C.write_json(out, result)} and {result['plot']}")
    return result

if __name__ == '__main__': main()

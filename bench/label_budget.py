"""Does pretraining help more when labelled pairs are few? MNLI accuracy against the number of labelled train pairs,
for the untrained model and the fully pretrained one of `bench/transfer.py`'s run, with bag of words beside them.

For each N in --sizes (the first N pairs of the 20k sample, which is shuffled), both models are finetuned with
`atombert.finetuning.finetune`'s default recipe (LR by width, batch 32, 10% warmup, the model's dropout) for its 3
epochs, or for as many epochs as make --min-steps optimizer steps when 3 epochs make fewer (1,000 pairs make 94 steps
in 3 epochs: too few for either model to leave the majority class, so the comparison would say nothing), with each of
--seeds, and evaluated on the full `dev_matched.jsonl` and `dev_mismatched.jsonl`. Bag of words (`bench/transfer.py`'s:
logistic regression on hypothesis n-grams and premise overlap) is trained on the same N pairs. The models come from
`--work`, the folder of a `bench/transfer.py` run with the same `--preset` and `--pretrain-steps` (made first when it
is not there); finetunings already in `--work` are reused (all 20k pairs with the default recipe: `bench/transfer.py`'s).

    python bench/label_budget.py --pretrain-steps 12000   # the models of transfer_long: 29 minutes on 2 cores (label_budget.json's
                                                          # total_minutes; it reused transfer_long's four 20,000-pair finetunings)
    python bench/label_budget.py --small                  # CI smoke size (preset tiny, a few steps, 100 and 300 pairs)
"""
import json, math, statistics, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C
import transfer as T

MODELS = ('untrained', 'pretrained')

def parse_args(argv=None):
    p = C.script_parser(__doc__, 'bench/results/label_budget.json', 'preset tiny, 20 pretraining steps, 100 and 300 pairs, one seed')
    p.add_argument('--preset', default='small')
    p.add_argument('--vocab-size', type=int, default=8000)
    p.add_argument('--pretrain-steps', type=int, default=0, help="length of the pretraining run (0: atombert pretrain's default)")
    p.add_argument('--sizes', default='1000,2000,5000,20000', help='comma-separated numbers of labelled train pairs')
    p.add_argument('--min-steps', type=int, default=470, help='least optimizer steps of a finetuning (470: 3 epochs of 5,000 pairs)')
    p.add_argument('--lr', type=float, default=0, help='finetuning LR (0: by model width, as finetune chooses it)')
    p.add_argument('--seeds', default='0,1', help='finetuning seeds')
    p.add_argument('--dev-examples', type=int, default=0, help='first N pairs of each dev set (0: all)')
    p.add_argument('--work', default='runs/transfer', help="bench/transfer.py's folder: its models, and the finetuned ones")
    args = p.parse_args(argv)
    if args.small:
        args.preset, args.vocab_size, args.pretrain_steps, args.dev_examples = 'tiny', 1000, 20, 200
        args.sizes, args.seeds, args.min_steps = '100,300', '0', 20
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(',') if s.strip()})
        args.seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
    except ValueError as e: raise SystemExit(f'error: --sizes and --seeds are comma-separated whole numbers ({e})')
    if not args.sizes or min(args.sizes) < 10: raise SystemExit('error: --sizes must name numbers of pairs >= 10')
    if not args.seeds: raise SystemExit('error: --seeds names no seed')
    for name in ('vocab_size',):
        if getattr(args, name) <= 0: raise SystemExit(f'error: --{name.replace("_", "-")} must be > 0')
    for name in ('pretrain_steps', 'min_steps', 'dev_examples', 'lr'):
        if getattr(args, name) < 0: raise SystemExit(f'error: --{name.replace("_", "-")} must be >= 0')
    from atombert.config import PRESETS
    if args.preset not in PRESETS: raise SystemExit(f'error: --preset {args.preset!r} is not one of {list(PRESETS)}')
    # what bench/transfer.py's pretraining run takes: its MLM run, checkpointed at its end only; all the train sample
    args.token_objective, args.pretrain_minutes, args.budgets, args.train_examples = 'mlm', 0, [1.0], 0
    C.set_threads(args)
    return args

def finetune_defaults() -> dict:
    "`finetune`'s default epochs and batch size."
    return C.finetune_defaults('epochs', 'batch_size')

def epochs_for(pairs:int, min_steps:int, default:dict) -> float:
    "The default epochs, or more where they make fewer than `min_steps` optimizer steps on `pairs` pairs."
    steps = default['epochs'] * math.ceil(pairs / default['batch_size'])
    return float(default['epochs']) if steps >= min_steps else math.ceil(10 * min_steps / math.ceil(pairs / default['batch_size'])) / 10

def majority_share(labels:list) -> float:
    "The accuracy of always predicting the most frequent label."
    return max(labels.count(c) for c in set(labels)) / len(labels)

def plot(result:dict, path:Path) -> Path:
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows, sizes = result['rows'], result['args']['sizes']
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), sharey=True)
    for ax, split in zip(axes, ('matched', 'mismatched')):
        for model, c in (('untrained', 'C7'), ('pretrained', 'C0')):
            runs = [[r[split] * 100 for r in rows if r['model'] == model and r['pairs'] == n] for n in sizes]
            mean = [statistics.mean(v) for v in runs]
            ax.errorbar(sizes, mean, yerr=[[m - min(v) for m, v in zip(mean, runs)], [max(v) - m for m, v in zip(mean, runs)]],
                        fmt='o-', capsize=4, color=c, label=f'{model} (mean, min–max over seeds)')
        ax.plot(sizes, [result['bag_of_words'][str(n)][split] * 100 for n in sizes], 's--', color='C1', label='bag of words')
        ax.axhline(result['majority'][split] * 100, color='k', ls=':', lw=1, label='majority class')
        ax.set(xscale='log', xlabel='labelled MNLI train pairs', title=f'MNLI dev {split} accuracy %')
        ax.set_xticks(sizes, [f'{n:,}' for n in sizes]); ax.minorticks_off(); ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc='center left')
    fig.suptitle(f"{result['args']['preset']}: untrained vs pretrained ({result['pretraining']['steps']:,} steps) by the number of "
                 f"labelled pairs (at least {result['args']['min_steps']} finetuning steps each)", fontsize=10)
    fig.tight_layout()
    return C.save_figure(fig, path)

def main(argv=None):
    args = parse_args(argv)
    from atombert.albert import config_from_albert
    from atombert.finetuning import finetune_lr
    work = Path(args.work); work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    corpus, held_out, tokenizer, full_train, dev = T.study_data(args, work)
    if max(args.sizes) > len(full_train): raise SystemExit(f'error: --sizes {max(args.sizes)} is more than the {len(full_train):,} train pairs')
    print(f'the models: {args.preset}, untrained and pretrained ({args.pretrain_steps or "the default"} steps) in {work} ...', flush=True)
    run, pre = T.pretrain_run(args, corpus, held_out, tokenizer, work)
    final = pre['budgets'][-1]
    models = {'untrained': (0, T.untrained_model(args, run, work)), 'pretrained': (final['step'], Path(final['checkpoint']))}
    lr, default = args.lr or finetune_lr(config_from_albert(json.loads((run/'config.json').read_text()))), finetune_defaults()
    rows, bow = [], {}
    for n in args.sizes:
        train = full_train.select(range(n))
        epochs = epochs_for(n, args.min_steps, default)
        bow[str(n)] = T.bag_of_words(train, dev)
        print(f"{n:,} pairs, {epochs:g} epochs ({epochs * math.ceil(n / default['batch_size']):.0f} steps); bag of words: "
              f"dev matched {bow[str(n)]['matched']:.2%}, mismatched {bow[str(n)]['mismatched']:.2%}", flush=True)
        for seed in args.seeds:
            for model, (step, path) in models.items():
                # all the pairs with the default recipe is bench/transfer.py's own finetuning: its folder, reused
                name = f'step-{step}-seed-{seed}-lr-{lr:g}-epochs-' + ('default' if epochs == default['epochs'] else f'{epochs:g}')
                if n < len(full_train): name += f'-pairs-{n}'
                r = T.finetuned_accuracy(path, work/'finetuned'/name, train, dev, seed, lr, epochs=epochs)
                rows.append(dict(pairs=n, model=model, epochs=epochs, pretrain_steps=step, **r))          # r: seed, lr, accuracies
                print(f"  seed {seed} {model:10s}: dev matched {r['matched']:.2%}, mismatched {r['mismatched']:.2%} "
                      f"({(r['finetune_seconds'] or 0) / 60:.1f} min)", flush=True)
    mean = lambda n, model, split: statistics.mean(r[split] for r in rows if r['pairs'] == n and r['model'] == model) * 100
    table = [dict(pairs=n, epochs=epochs_for(n, args.min_steps, default), bow=bow[str(n)]['matched'] * 100,
                  u=mean(n, 'untrained', 'matched'), p=mean(n, 'pretrained', 'matched'),
                  gain=mean(n, 'pretrained', 'matched') - mean(n, 'untrained', 'matched'),
                  gain_mm=mean(n, 'pretrained', 'mismatched') - mean(n, 'untrained', 'mismatched')) for n in args.sizes]
    majority = {k: majority_share(list(d['label'])) for k, d in dev.items()}
    out = Path(args.out)
    result = dict(benchmark='label_budget', machine=C.machine_info(args.device), args=vars(args), lr=lr, finetune_defaults=default,
                  data=dict(train=C.MNLI_TRAIN_SAMPLE, dev={k: len(d) for k, d in dev.items()}), majority=majority,
                  pretraining=dict(run=str(run), steps=pre['steps'], held_out=final['held_out']),
                  bag_of_words=bow, rows=rows, table=table, total_minutes=(time.perf_counter() - t0) / 60)
    result['plot'] = str(plot(result, out.with_suffix('.png')))
    print()
    C.print_table(table, [('pairs', 'labelled pairs', ','), ('epochs', 'epochs', 'g'), ('bow', 'bag of words %', '.2f'),
                          ('u', 'untrained %', '.2f'), ('p', 'pretrained %', '.2f'), ('gain', 'gain (points)', '+.2f'),
                          ('gain_mm', 'gain, mismatched', '+.2f')])
    print(f"\ndev matched, mean over seeds {args.seeds}; lr {lr:g}; dev {', '.join(f'{k} {v:,}' for k, v in result['data']['dev'].items())}")
    print(f"wrote {C.write_json(out, result)} and {result['plot']} ({result['total_minutes']:.0f} min in all)")
    return result

if __name__ == '__main__': main()

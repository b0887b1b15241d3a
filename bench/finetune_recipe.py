"""Which finetuning recipe suits a small model and 20k MNLI pairs, and what do pretrained weights need that random ones do
not? One knob at a time around `atombert.finetuning.finetune`'s defaults, for an untrained model and a pretrained one:
`bench/transfer.py`'s run, or with --pretrained any pretraining run (`wiki_transfer`'s) and its untrained twin (same
config, tokenizer and initialization seed), finetuned on the first --train-examples of `wiki_transfer`'s 29,946 pairs.

The default recipe: 3 epochs, batch 32, 10% warmup, the LR by width (`finetune_lr`: 3e-4 for `small`; the LR was swept
by `bench/transfer.py --finetune-lrs`), the model's own dropout (`small`: none in the encoder, 0.1 before the
classifier). Each variant changes one knob:
- epochs 2 and 5;
- batch 16 and 64 (same epochs: twice and half the steps);
- no warmup, and 30% warmup;
- dropout 0.1 and 0 (hidden, attention and classifier: `finetune(dropout=)`);
- the word embeddings frozen (`finetune(freeze_embeddings=True)`);
- lr 1e-3 (`finetune_lr`'s 3e-4 × 3.3);
- max length 64: pairs cut to 64 tokens, the length of `pretrain`'s rows (finetuning's default is 128; the share of train pairs
  longer than the pretraining rows is in the JSON), so that finetuning never shows the model a position
  pretraining left untrained;
- a new pooler: the pooler re-initialized as a fresh model of the same config (seed 0) has it. Sentence-order prediction
  trained the pretrained model's pooler and finetuning reuses it; the untrained model's is new already (its row is the
  default's).
Before any finetuning, what the new classifier starts from is measured on --probe-pairs train pairs, for both models: the
[CLS] vectors' and pooled outputs' mean pairwise cosine similarity, their spread (the mean distance from the mean vector,
over its length) and the share of pooled units saturated (|tanh| > 0.99); and what the frozen features give a logistic
regression fitted on the train pairs ([CLS], and the mean over the pair's tokens), scored on both dev sets.
Both models are finetuned with each, on `../shared/data/mnli/train_sample_20k_ptbtok.tsv`, and evaluated on the full
`dev_matched.jsonl` and `dev_mismatched.jsonl`. The models come from `--work`, the folder of a `bench/transfer.py`
run with the same `--preset` and `--pretrain-steps` (made first when it is not there: the pretraining is then part
of the time); finetunings already in `--work` are reused, the default recipe's from `bench/transfer.py` too.

    python bench/finetune_recipe.py --pretrain-steps 12000   # the models of transfer_long: about 90 minutes on 2 cores
    python bench/finetune_recipe.py --pretrained runs/wiki_transfer_120/pretrain-wikipedia --checkpoint-step 8000 \
        --train-examples 5000 --variants 'lr 1e-3,epochs 5,frozen embeddings,new pooler' --work runs/recipe_wiki
    python bench/finetune_recipe.py --small                  # CI smoke size (preset tiny, a few steps, 300 pairs)
"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C
import transfer as T

VARIANTS = {                                # name: what changes against finetune's defaults
    'default': {},
    'epochs 2': dict(epochs=2), 'epochs 5': dict(epochs=5),
    'batch 16': dict(batch_size=16), 'batch 64': dict(batch_size=64),
    'no warmup': dict(warmup=0), 'warmup 30%': dict(warmup=0.3),
    'dropout 0.1': dict(dropout=0.1), 'dropout 0': dict(dropout=0.0),
    'frozen embeddings': dict(freeze_embeddings=True),
    'lr 1e-3': dict(lr=1e-3),
    'max length 64': dict(max_length=64),  # pairs cut to the pretraining rows' length: no position pretraining left untrained
    'new pooler': {},                       # the weights change, not the recipe: `with_new_pooler`
}

def parse_args(argv=None):
    p = C.script_parser(__doc__, 'bench/results/finetune_recipe.json', 'preset tiny, 20 pretraining steps, 300 pairs, 1 epoch')
    p.add_argument('--preset', default='small')
    p.add_argument('--vocab-size', type=int, default=8000)
    p.add_argument('--pretrain-steps', type=int, default=0, help="length of the pretraining run (0: atombert pretrain's default)")
    p.add_argument('--variants', default=','.join(VARIANTS), help='comma-separated: ' + ', '.join(VARIANTS).replace('%', '%%'))   # argparse formats help with %
    p.add_argument('--seed', type=int, default=0, help='finetuning seed')
    p.add_argument('--train-examples', type=int, default=0, help='first N pairs of the train sample (0: all 20k)')
    p.add_argument('--dev-examples', type=int, default=0, help='first N pairs of each dev set (0: all)')
    p.add_argument('--pretrained', default=None, help="a pretraining run's folder to take the models from (its run.json, config and "
                   "tokenizer make the untrained twin), instead of bench/transfer.py's run")
    p.add_argument('--checkpoint-step', type=int, default=0, help="with --pretrained: its checkpoint at this step (0: the run's final model)")
    p.add_argument('--probe-pairs', type=int, default=512, help='train pairs the starting representations are measured on')
    p.add_argument('--work', default='runs/transfer', help="bench/transfer.py's folder: its models, and the finetuned ones")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(',') if v.strip()]
    if unknown := [v for v in args.variants if v not in VARIANTS]:
        raise SystemExit(f'error: unknown --variants {unknown}; known: {", ".join(VARIANTS)}')
    if 'default' not in args.variants: args.variants.insert(0, 'default')      # what the others are compared with
    for name in ('vocab_size',):
        if getattr(args, name) <= 0: raise SystemExit(f'error: --{name.replace("_", "-")} must be > 0')
    if args.probe_pairs < 2: raise SystemExit('error: --probe-pairs must be >= 2')
    for name in ('pretrain_steps', 'train_examples', 'dev_examples', 'seed', 'checkpoint_step'):
        if getattr(args, name) < 0: raise SystemExit(f'error: --{name.replace("_", "-")} must be >= 0')
    args.epochs_scale = 1.0
    if args.small:
        args.preset, args.vocab_size, args.pretrain_steps, args.train_examples, args.dev_examples = 'tiny', 1000, 20, 300, 200
        args.epochs_scale, args.probe_pairs = 1 / 3, 64  # every variant's epochs scaled: 1 epoch by default
    from atombert.config import PRESETS
    if args.preset not in PRESETS: raise SystemExit(f'error: --preset {args.preset!r} is not one of {list(PRESETS)}')
    # what bench/transfer.py's pretraining run takes: its MLM run, checkpointed at its end only
    args.token_objective, args.pretrain_minutes, args.budgets = 'mlm', 0, [1.0]
    C.set_threads(args)
    return args

def recipe_of(variant:str, scale:float=1.0) -> dict:
    "`finetune`'s recipe arguments for `variant`: its defaults but for what `variant` changes (epochs scaled by `scale`)."
    from atombert.training import TrainArgs
    defaults = C.finetune_defaults('epochs', 'batch_size', 'dropout', 'freeze_embeddings')
    defaults['warmup'] = TrainArgs().warmup             # a training setting: fit's default
    kw = defaults | VARIANTS[variant]
    kw['epochs'] *= scale
    return kw

def pretrained_models(args, work:Path) -> tuple:
    "(run, {model: (pretraining step, folder)}, train, dev) of --pretrained: a run's model or checkpoint and its untrained twin."
    import wiki_transfer as W
    run = Path(args.pretrained)
    if not (run/'run.json').is_file(): raise SystemExit(f'error: --pretrained {run}: no run.json there (not a pretraining run folder)')
    path = run/'checkpoints'/f'step-{args.checkpoint_step:08d}' if args.checkpoint_step else run
    if not (path/'config.json').is_file(): raise SystemExit(f'error: {path}: no model there')
    step = args.checkpoint_step or json.loads((run/'run.json').read_text())['args']['max_steps']   # budgeted or not: never 0, the untrained model's
    train, dev = W.mnli_data(args)            # the 29,946 pairs in wiki_transfer's order: its label budgets are the first N
    train, dev = C.first(train, args.train_examples), {k: C.first(d, args.dev_examples) for k, d in dev.items()}
    return run, {'untrained': (0, T.untrained_model(args, run, work)), 'pretrained': (step, path)}, train, dev

def longer_than(model_dir:Path, data, n:int) -> float:
    "The share of `data`'s pairs longer than `n` tokens with `model_dir`'s tokenizer (cut at its own length only)."
    from atombert.batches import encode_examples
    from atombert.evaluation import tokenizer_of
    ids = encode_examples(tokenizer_of(model_dir), data, None)['input_ids']
    return sum(len(x) > n for x in ids) / len(ids)

def with_new_pooler(model_dir:Path, out:Path) -> Path:
    "`model_dir`'s weights with the pooler a fresh model of the same config (seed 0) has."
    import torch
    from atombert.model import AtomBertForPreTraining
    from atombert.evaluation import tokenizer_of
    if not (out/'model.safetensors').exists():
        model = AtomBertForPreTraining.from_pretrained(model_dir)
        torch.manual_seed(0)
        model.model.pooler.load_state_dict(AtomBertForPreTraining(model.config).model.pooler.state_dict())
        model.save_pretrained(out, tokenizer=tokenizer_of(model_dir))
    return out

def features(model_dir:Path, data) -> dict:
    "The frozen encoder's view of `data`'s pairs (as finetuning cuts them): its [CLS] vectors, their mean over the tokens, the pooler's output."
    import torch
    from atombert.model import AtomBertForPreTraining
    from atombert.batches import encode_examples, pad_pairs, pad_id_of
    from atombert.evaluation import tokenizer_of
    model, tok = AtomBertForPreTraining.from_pretrained(model_dir).eval(), tokenizer_of(model_dir)
    enc, out = encode_examples(tok, data, 128), {'cls': [], 'mean': [], 'pooled': []}
    for i in range(0, len(data), 256):
        b = pad_pairs([{k: enc[k][j] for k in ('input_ids', 'token_type_ids', 'attention_mask')}
                       for j in range(i, min(i + 256, len(data)))], pad_id_of(tok))
        with torch.no_grad(): o = model.model(b['input_ids'], b['attention_mask'], b['token_type_ids'])
        m = b['attention_mask'].unsqueeze(-1).to(o.last_hidden_state.dtype)
        out['cls'].append(o.last_hidden_state[:, 0]); out['pooled'].append(o.pooler_output)
        out['mean'].append((o.last_hidden_state * m).sum(1) / m.sum(1))
    return {k: torch.cat(v).double() for k, v in out.items()}

def starting_point(f:dict, n:int) -> dict:
    "What a new classifier sees before finetuning: how alike the [CLS] vectors and pooled outputs of the first `n` pairs of features `f` are."
    import torch
    def mean_cosine(x):
        x = torch.nn.functional.normalize(x, dim=-1); sim = x @ x.T
        return ((sim.sum() - sim.diagonal().sum()) / (len(x) * (len(x) - 1))).item()
    def spread(x): return ((x - x.mean(0)).norm(dim=-1).mean() / x.mean(0).norm()).item()
    cls, pooled = f['cls'][:n], f['pooled'][:n]
    return dict(pairs=len(cls), cls_cosine=mean_cosine(cls), cls_spread=spread(cls), pooled_cosine=mean_cosine(pooled),
                pooled_spread=spread(pooled), pooled_saturated=(pooled.abs() > 0.99).double().mean().item())

def frozen_probe(f:dict, train, dev) -> dict:
    """What the encoder's features give with no finetuning at all: a logistic regression (scikit-learn, standardized
    features) on the frozen model's [CLS] vector and on its mean over the pair's tokens, fitted on `train`, scored on
    each `dev` set. `f` holds the features of `train` and of each dev set by name. It tells a representation that holds
    less of what MNLI needs from one that finetuning fails to use."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    out = {}
    for kind in ('cls', 'mean'):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(f['train'][kind].numpy(), np.array(train['label']))
        out[kind] = {name: float((clf.predict(f[name][kind].numpy()) == np.array(d['label'])).mean()) for name, d in dev.items()}
    return out

def plot(result:dict, path:Path) -> Path:
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows, probe = result['rows'], result.get('frozen_probe', {})   # studies from before the probe have none
    probes = {'no finetuning: frozen [CLS]': 'cls', 'no finetuning: frozen token mean': 'mean'} if probe else {}
    names = list(dict.fromkeys(r['variant'] for r in rows)) + list(probes)
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(names) + 1.8), sharey=True)
    for ax, split in zip(axes, ('matched', 'mismatched')):
        for k, (model, c) in enumerate((('untrained', 'C7'), ('pretrained', 'C0'))):
            acc = {r['variant']: r[split] * 100 for r in rows if r['model'] == model}
            acc |= {name: probe[model][kind][split] * 100 for name, kind in probes.items()}
            ys = [i + (k - 0.5) * 0.38 for i in range(len(names))]
            ax.barh(ys, [acc[n] for n in names], height=0.36, color=c, label=f'{model}')
            default = acc['default']
            ax.axvline(default, color=c, ls=':', lw=1)
            for y, n in zip(ys, names): ax.text(acc[n] + 0.1, y, f'{acc[n]:.1f}', va='center', fontsize=7)
        every = [r[split] * 100 for r in rows] + [p[kind][split] * 100 for p in probe.values() for kind in probes.values()]
        ax.set(xlim=(max(0, min(every) - 3), max(every) + 2), title=f'MNLI dev {split} accuracy %',
               yticks=range(len(names)), yticklabels=names)
        ax.grid(axis='x', alpha=0.3)
    axes[0].invert_yaxis()                        # once: the axes share y, a second flip would undo it
    axes[0].legend(fontsize=8, loc='lower right')
    fig.suptitle(f"finetuning recipe, one knob at a time ({result['data']['train_examples']:,} MNLI pairs, seed {result['args']['seed']}; "
                 f"dotted: the default recipe)", fontsize=10)
    fig.tight_layout()
    return C.save_figure(fig, path)

def main(argv=None):
    args = parse_args(argv)
    from atombert.albert import config_from_albert
    from atombert.finetuning import finetune_lr
    work = Path(args.work); work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.pretrained:
        print(f'the models: {args.pretrained} (step {args.checkpoint_step or "final"}) and its untrained twin ...', flush=True)
        run, models, train, dev = pretrained_models(args, work)
        pretraining = dict(run=str(run), steps=models['pretrained'][0], checkpoint=str(models['pretrained'][1]))
    else:
        corpus, held_out, tokenizer, train, dev = T.study_data(args, work)
        print(f'the models: {args.preset}, untrained and pretrained ({args.pretrain_steps or "the default"} steps) in {work} ...', flush=True)
        run, pre = T.pretrain_run(args, corpus, held_out, tokenizer, work)
        final = pre['budgets'][-1]
        models = {'untrained': (0, T.untrained_model(args, run, work)), 'pretrained': (final['step'], Path(final['checkpoint']))}
        pretraining = dict(run=str(run), steps=pre['steps'], held_out=final['held_out'])
    seq_len = json.loads((run/'run.json').read_text())['seq_len']
    pretraining |= dict(seq_len=seq_len, train_pairs_longer=longer_than(models['untrained'][1], train, seq_len))
    print(f"  {pretraining['train_pairs_longer']:.1%} of the train pairs are longer than the pretraining rows ({seq_len} tokens)", flush=True)
    # each model encodes the train pairs and the dev sets once: the starting point reads the first pairs, the probe all
    feats = {model: {'train': features(path, train)} | {name: features(path, d) for name, d in dev.items()} for model, (_, path) in models.items()}
    start = {model: starting_point(f['train'], args.probe_pairs) for model, f in feats.items()}
    for model, s in start.items():
        print(f"  {model:10s} before finetuning: [CLS] cosine {s['cls_cosine']:.4f}, spread {s['cls_spread']:.3f}; pooled cosine "
              f"{s['pooled_cosine']:.4f}, spread {s['pooled_spread']:.3f}, units saturated {s['pooled_saturated']:.1%}", flush=True)
    probe = {model: frozen_probe(f, train, dev) for model, f in feats.items()}
    del feats
    for model, pr in probe.items():
        print(f"  {model:10s} frozen features, logistic regression: " + '; '.join(
            f"{kind} dev matched {acc['matched']:.2%}, mismatched {acc['mismatched']:.2%}" for kind, acc in pr.items()), flush=True)
    lr = finetune_lr(config_from_albert(json.loads((run/'config.json').read_text())))
    rows = []
    for variant in args.variants:
        kw = recipe_of(variant, args.epochs_scale)
        for model, (step, path) in models.items():
            # the default recipe's folder is bench/transfer.py's own name for it: its finetunings are reused; an untrained
            # model's pooler is new already, so its 'new pooler' is its default
            same = variant == 'default' or (variant == 'new pooler' and model == 'untrained')
            suffix = '' if same else '-' + variant.replace(' ', '-').replace('%', 'pct')
            epochs = 'default' if args.epochs_scale == 1 else f"{kw['epochs']:g}"
            out = work/'finetuned'/f'step-{step}-seed-{args.seed}-lr-{lr:g}-epochs-{epochs}{suffix}'
            if variant == 'new pooler' and model == 'pretrained': path = with_new_pooler(path, work/f'step-{step}-new-pooler')
            r = T.finetuned_accuracy(path, out, train, dev, args.seed, kw.get('lr', lr), **{k: v for k, v in kw.items() if k != 'lr'})
            rows.append(dict(variant=variant, model=model, pretrain_steps=step, recipe=kw, **r))
            print(f"  {variant:17s} {model:10s}: dev matched {r['matched']:.2%}, mismatched {r['mismatched']:.2%} "
                  f"({(r['finetune_seconds'] or 0) / 60:.1f} min)", flush=True)
    acc = {(r['variant'], r['model']): r for r in rows}
    table = [dict(variant=v, u=acc[v, 'untrained']['matched'] * 100, p=acc[v, 'pretrained']['matched'] * 100,
                  um=acc[v, 'untrained']['mismatched'] * 100, pm=acc[v, 'pretrained']['mismatched'] * 100,
                  gain=(acc[v, 'pretrained']['matched'] - acc[v, 'untrained']['matched']) * 100) for v in args.variants]
    out = Path(args.out)
    result = dict(benchmark='finetune_recipe', machine=C.machine_info(args.device), args=vars(args), lr=lr,
                  default_recipe=recipe_of('default', args.epochs_scale),
                  data=dict(train=[C.MNLI_TRAIN_SAMPLE, 'mnli/train_extra_9946.tsv'] if args.pretrained else C.MNLI_TRAIN_SAMPLE, train_examples=len(train), dev={k: len(d) for k, d in dev.items()}),
                  pretraining=pretraining, starting_point=start, frozen_probe=probe, rows=rows, table=table, total_minutes=(time.perf_counter() - t0) / 60)
    result['plot'] = str(plot(result, out.with_suffix('.png')))
    print()
    C.print_table(table, [('variant', 'recipe', ''), ('u', 'untrained matched %', '.2f'), ('p', 'pretrained matched %', '.2f'),
                          ('gain', 'gain (points)', '+.2f'), ('um', 'untrained mismatched %', '.2f'), ('pm', 'pretrained mismatched %', '.2f')])
    print(f"\nlr {lr:g}, seed {args.seed}, {len(train):,} train pairs; dev {', '.join(f'{k} {v:,}' for k, v in result['data']['dev'].items())}")
    print(f"wrote {C.write_json(out, result)} and {result['plot']} ({result['total_minutes']:.0f} min in all)")
    return result

if __name__ == '__main__': main()

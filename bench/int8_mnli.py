"""MNLI dev accuracy of a finetuned atombert classifier in float32 and with its `nn.Linear` layers dynamically
quantized to int8 (`atombert.evaluation.quantize_int8`, what `atombert predict --int8` runs: PyTorch's `quantize_dynamic`, CPU), on the full
matched and mismatched dev sets: the accuracy of both, the difference in points, how often their predictions agree,
and the tokens/s of both through `atombert.evaluation.predict` (interleaved in one run, chunk by chunk).

    python bench/int8_mnli.py --model DIR             # a finetuned MNLI classifier (atombert finetune, atombert run)
    python bench/int8_mnli.py                         # first finetunes preset small on the 20k MNLI train sample
                                                      # (2 epochs of 64 at lr 1e-3: about 45% dev accuracy, ~8 min on 1 core)
    python bench/int8_mnli.py --small                 # CI smoke size
"""
import statistics, sys, tempfile, time, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import torch
import common as C
from atombert.evaluation import quantize_int8

SPLITS = ('validation_matched', 'validation_mismatched')
TARGET_LOSS_POINTS = 1.0       # issue 5: int8 loses at most 1 point of MNLI dev accuracy
DEFAULT_RECIPE = dict(norm='pre', initializer_range=0.05)   # small models from scratch train Pre-LN (see nbs 08_mnli)

def parse_args(argv=None):
    p = C.script_parser(__doc__, 'bench/results/int8_mnli.json', 'preset tiny, 30 finetuning steps, 200 dev examples per set')
    p.add_argument('--model', default=None, help='finetuned MNLI classifier directory (atombert.evaluation.load_finetuned); '
                                                 'without it one is finetuned first (the options below)')
    p.add_argument('--data', default=None, help='MNLI folder for load_mnli (default: the shared data folder mnli/)')
    p.add_argument('--dev-examples', type=int, default=0, help='evaluate the first N examples of each dev set (0: all)')
    p.add_argument('--eval-batch-size', type=int, default=128, help="predict's batch size")
    p.add_argument('--max-length', type=int, default=128)
    p.add_argument('--chunks', type=int, default=4, help='each dev set is cut into this many chunks; fp32 and int8 alternate per chunk')
    p.add_argument('--seed', type=int, default=0)
    g = p.add_argument_group('the model finetuned when --model is not given')
    g.add_argument('--preset', default='small', help='config preset, Pre-LN with initializer_range 0.05 (default small)')
    g.add_argument('--vocab-size', type=int, default=8000, help='WordPiece vocabulary trained on the train sample text')
    g.add_argument('--pretrain-steps', type=int, default=0, help='MLM + SOP steps on WikiText-2 raw validation first (0: none)')
    g.add_argument('--epochs', type=float, default=2.0, help='passes over the train sample')
    g.add_argument('--max-steps', type=int, default=0, help='finetuning steps (0: from --epochs)')
    g.add_argument('--batch-size', type=int, default=64)
    g.add_argument('--lr', type=float, default=1e-3)
    g.add_argument('--save-model', default=None, help='keep the finetuned model in this (new or empty) directory')
    args = p.parse_args(argv)
    if args.small:
        args.preset, args.vocab_size, args.max_steps, args.batch_size, args.dev_examples, args.chunks = 'tiny', 1000, 30, 16, 200, 2
        args.pretrain_steps = min(args.pretrain_steps, 5)
    for name in ('eval_batch_size', 'max_length', 'chunks', 'vocab_size', 'batch_size'):
        if getattr(args, name) <= 0: raise SystemExit(f'error: --{name.replace("_", "-")} must be > 0, got {getattr(args, name)}')
    for name in ('dev_examples', 'pretrain_steps', 'max_steps'):
        if getattr(args, name) < 0: raise SystemExit(f'error: --{name.replace("_", "-")} must be >= 0, got {getattr(args, name)}')
    if not args.epochs > 0 and not args.max_steps: raise SystemExit('error: --epochs must be > 0 (or give --max-steps)')
    if args.model and not Path(args.model).is_dir(): raise SystemExit(f'error: --model {args.model}: no such directory')
    if args.save_model and Path(args.save_model).exists() and any(Path(args.save_model).iterdir()):
        raise SystemExit(f'error: --save-model {args.save_model} already holds files; choose a new or empty directory')
    from atombert.config import PRESETS
    if args.preset not in PRESETS: raise SystemExit(f'error: --preset {args.preset!r} is not one of {list(PRESETS)}')
    C.set_threads(args)
    torch.manual_seed(args.seed)
    return args

# ---------------------------------------------------------------- the default model: a quick finetuning

def finetune_default(args, data_path, workdir:Path) -> tuple[Path, dict]:
    """Tokenizer trained on the train sample's text, a `--preset` model (Pre-LN, init 0.05) pretrained for
    `--pretrain-steps` on WikiText-2 raw validation (or not at all), finetuned with `atombert.finetuning.finetune`."""
    from atombert.config import AtomBertConfig
    from atombert.mnli import load_mnli
    from atombert.finetuning import finetune
    from atombert.model import AtomBertForPreTraining
    from atombert.pretrain import pretrain
    from atombert.tokenizer import train_tokenizer, save_tokenizer
    t0 = time.perf_counter()
    sample = Path(data_path)/Path(C.MNLI_TRAIN_SAMPLE).name       # a folder holding the 20k sample (the shared one): that file
    train = load_mnli(str(sample) if sample.is_file() else data_path, 'train')
    tok = train_tokenizer(list(train['premise']) + list(train['hypothesis']), vocab_size=args.vocab_size,
                          max_length=args.max_length, show_progress=False)
    config = AtomBertConfig.preset(args.preset, vocab_size=tok.get_vocab_size(), **DEFAULT_RECIPE)
    pre = workdir/'pretrained'
    if args.pretrain_steps:
        save_tokenizer(tok, workdir/'tokenizer')
        pretrain(str(C.shared_path(C.WIKITEXT_RAW[0])), pre, args.preset, tokenizer=str(workdir/'tokenizer'),
                 seq_len=min(128, config.max_position_embeddings), max_steps=args.pretrain_steps, seed=args.seed,
                 eval_corpus=str(C.shared_path(C.WIKITEXT_RAW[1])), eval_batches=5, config_overrides=DEFAULT_RECIPE,
                 cache_dir=str(workdir/'cache'), progress=False)
    else:   # "pretrained" = as initialized: finetune then takes the path a real checkpoint takes
        torch.manual_seed(args.seed)
        AtomBertForPreTraining(config).save_pretrained(pre, tokenizer=tok)
    t1 = time.perf_counter()
    out = Path(args.save_model) if args.save_model else workdir/'mnli'
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*newly initialized')
        finetune(pre, train, None, out, tokenizer=tok, max_steps=args.max_steps or None, epochs=args.epochs,
                 batch_size=args.batch_size, lr=args.lr, max_length=args.max_length, seed=args.seed, progress=False)
    recipe = dict(preset=args.preset, config_overrides=DEFAULT_RECIPE, vocab_size=tok.get_vocab_size(), train_examples=len(train),
                  tokenizer='WordPiece trained on the train sample text', pretrain_steps=args.pretrain_steps,
                  pretrain_corpus=C.WIKITEXT_RAW[0] if args.pretrain_steps else None, epochs=args.epochs,
                  max_steps=args.max_steps or None, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                  prepare_seconds=t1 - t0, finetune_seconds=time.perf_counter() - t1, saved_to=args.save_model)
    return out, recipe

# ---------------------------------------------------------------- evaluation

def counted_tokens(tok, data, max_length, batch_size, pad_id):
    "(real tokens, padded tokens) `predict` runs over `data`: its batches are `PairBatches` sorted by length."
    from atombert.batches import encode_examples, PairBatches
    enc = encode_examples(tok, data, max_length)
    plan = PairBatches(enc, batch_size, pad_id, shuffle=False)
    return int(plan.lengths.sum()), int(sum(len(b) * int(plan.lengths[b].max()) for b in plan.plan))

def timed_predictions(models:dict, tok, dev:dict, args) -> tuple:
    """(logits per split and model, seconds per chunk per model, real and padded tokens, seconds spent encoding): each dev
    set in --chunks chunks, every model predicting every chunk, who goes first alternating."""
    from atombert.batches import pad_id_of
    from atombert.evaluation import predict
    logits, times = {s: {m: [] for m in models} for s in dev}, {m: [] for m in models}
    tokens, encode_seconds, pad_id = dict(real=0, padded=0), 0.0, pad_id_of(tok)
    for s, d in dev.items():
        for c, idx in enumerate(np.array_split(np.arange(len(d)), args.chunks)):
            chunk = d.select(idx.tolist())
            t = time.perf_counter()
            real, padded = counted_tokens(tok, chunk, args.max_length, args.eval_batch_size, pad_id)
            encode_seconds += time.perf_counter() - t
            tokens['real'] += real; tokens['padded'] += padded
            for m in (list(models) if c % 2 == 0 else list(models)[::-1]):
                t = time.perf_counter()
                logits[s][m].append(predict(models[m], tok, chunk, args.eval_batch_size, args.max_length))
                times[m].append(time.perf_counter() - t)
            print(f'  {s} chunk {c + 1}/{args.chunks}: ' + '  '.join(f'{m} {real / times[m][-1]:,.0f} tokens/s' for m in models), flush=True)
    return logits, times, tokens, encode_seconds

def split_numbers(d, logits:dict) -> dict:
    "Accuracy of each model on one dev set, how often they agree, and how far their logits are apart."
    from atombert.mnli import MNLI_LABELS
    gold = torch.tensor(list(d['label']))
    pred = {m: x.argmax(-1) for m, x in logits.items()}
    right = {m: p == gold for m, p in pred.items()}
    acc = {m: float(r.float().mean()) for m, r in right.items()}
    return dict(n=len(d), accuracy_fp32=acc['fp32'], accuracy_int8=acc['int8'], difference_points=(acc['int8'] - acc['fp32']) * 100,
                agreement=float((pred['fp32'] == pred['int8']).float().mean()),
                only_fp32_right=int((right['fp32'] & ~right['int8']).sum()), only_int8_right=int((right['int8'] & ~right['fp32']).sum()),
                majority_class=float(torch.bincount(gold, minlength=len(MNLI_LABELS)).max()) / len(d),
                logits_max_abs_diff=float((logits['fp32'] - logits['int8']).abs().max()),
                logits_mean_abs_diff=float((logits['fp32'] - logits['int8']).abs().mean()))

def report(result:dict):
    "The two tables and the lines under them."
    splits, speed = result['splits'], result['speed']
    print()
    C.print_table([dict(split=s.removeprefix('validation_'), **r, fp=r['accuracy_fp32'] * 100, q=r['accuracy_int8'] * 100)
                   for s, r in splits.items()],
                  [('split', 'dev set', ''), ('n', 'examples', ',d'), ('fp', 'fp32 acc %', '.2f'), ('q', 'int8 acc %', '.2f'),
                   ('difference_points', 'int8 − fp32 (points)', '+.2f'), ('agreement', 'agreement', '.2%'),
                   ('only_fp32_right', 'only fp32 right', ',d'), ('only_int8_right', 'only int8 right', ',d'),
                   ('logits_max_abs_diff', 'max |Δlogit|', '.3f')])
    print()
    C.print_table([dict(name=m, **v) for m, v in speed.items()],
                  [('name', 'model', ''), ('tokens_per_s', 'tokens/s', ',.0f'), ('padded_tokens_per_s', 'padded tokens/s', ',.0f'),
                   ('examples_per_s', 'examples/s', ',.1f'), ('seconds', 'seconds', ',.1f')])
    print(f'\nint8 runs {result["int8_speedup"]:.2f}× the float32 rate (median over chunks; {result["int8_speedup_total"]:.2f}× in total) '
          f'through predict (tokenizing included); compare with transformers float32 in bench/inference.py')
    diffs = ', '.join(f'{r["difference_points"]:+.2f}' for r in splits.values())
    print(f'int8 − fp32: {diffs} points; largest loss {max(result["worst_int8_loss_points"], 0):.2f} points (target ≤ {TARGET_LOSS_POINTS}): '
          f'{"met" if result["target_met"] else "NOT met"}')
    if result['weak_model']:
        print(f'note: a weak model (fp32 accuracy {max(r["accuracy_fp32"] for r in splits.values()):.1%}; BERT-base reaches about 84%). '
              f'It still measures how much int8 changes the predictions, but a stronger model\'s margins, and so its loss, may differ.')

def main(argv=None):
    args = parse_args(argv)
    from atombert.mnli import load_mnli
    from atombert.evaluation import load_finetuned
    data_path = args.data or str(C.shared_path('mnli'))
    with tempfile.TemporaryDirectory() as workdir:
        recipe = None
        if args.model: model_dir = Path(args.model)
        else:
            print(f'finetuning a {args.preset} classifier on {data_path} (no --model given) ...', flush=True)
            model_dir, recipe = finetune_default(args, data_path, Path(workdir))
            print(f'  finetuned in {recipe["finetune_seconds"]:.0f} s', flush=True)
        fp32, tok = load_finetuned(model_dir)
    models = dict(fp32=fp32, int8=quantize_int8(fp32))   # quantize_dynamic copies: fp32 stays float

    dev = {s: load_mnli(data_path, s) for s in SPLITS}
    dev = {s: C.first(d, args.dev_examples) for s, d in dev.items()}
    print(f'int8 vs float32 on MNLI dev: {args.model or "the model finetuned above"}, {args.threads} threads, '
          f'{" + ".join(f"{len(d):,}" for d in dev.values())} examples, {args.chunks} chunks per set, batch {args.eval_batch_size}')
    logits, times, tokens, encode_seconds = timed_predictions(models, tok, dev, args)
    splits = {s: split_numbers(d, {m: torch.cat(v) for m, v in logits[s].items()}) for s, d in dev.items()}
    speed = {m: dict(seconds=sum(t), seconds_per_chunk=t, tokens_per_s=tokens['real'] / sum(t),
                     padded_tokens_per_s=tokens['padded'] / sum(t), examples_per_s=sum(len(d) for d in dev.values()) / sum(t))
             for m, t in times.items()}
    worst_loss = max(-r['difference_points'] for r in splits.values()) + 0.0   # (no -0.0)
    weak = max(r['accuracy_fp32'] for r in splits.values()) < 0.7
    result = dict(benchmark='int8_mnli', machine=C.machine_info('cpu'), args=vars(args), model=str(args.model or 'finetuned by this run'),
                  recipe=recipe, config=fp32.config.to_dict(), data=data_path, splits=splits, speed=speed, tokens=tokens,
                  encode_seconds_outside_timing=encode_seconds,
                  int8_speedup=statistics.median(f / q for f, q in zip(times['fp32'], times['int8'])),
                  int8_speedup_total=speed['fp32']['seconds'] / speed['int8']['seconds'],
                  worst_int8_loss_points=worst_loss, target_loss_points=TARGET_LOSS_POINTS,
                  target_met=worst_loss <= TARGET_LOSS_POINTS, weak_model=weak,
                  quantization=dict(api='torch.ao.quantization.quantize_dynamic via atombert.evaluation.quantize_int8',
                                    modules='every nn.Linear (encoder, pooler, classifier)', dtype='qint8',
                                    engine=torch.backends.quantized.engine))

    report(result)
    print(f'wrote {C.write_json(args.out, result)}')
    return result

if __name__ == '__main__': main()

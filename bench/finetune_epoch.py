"""MNLI finetuning epoch time with atombert's batching (length-bucketed `PairBatches`, each batch padded to its
longest row) against fixed padding to --seq-len (transformers' `run_glue.py` default, `pad_to_max_length=True`) and
against random batches padded to their longest row (transformers' `DataCollatorWithPadding`). Full training steps
run through `atombert.training.fit` (forward, backward, clipping, fused AdamW, schedule) with the same model, the
same examples and the same threads, interleaved in one run. Epoch times for the 20k train sample and for the full
MNLI train set are extrapolated from the measured steps.

    python bench/finetune_epoch.py                     # atombert-8m, batch 32, max length 128, 4 rounds × 8 steps
    python bench/finetune_epoch.py --small             # CI smoke size
"""
import statistics, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
import common as C

FULL_MNLI_TRAIN = 392_702   # examples in the full MNLI train set (GLUE)
VARIANTS = {
    'bucketed': "atombert's PairBatches(bucket=True): shuffled chunks of 64 batches sorted by length, each batch padded to its longest row",
    'dynamic': 'random batches padded to their longest row (transformers DataCollatorWithPadding, pad_to_max_length=False)',
    'fixed': 'random batches padded to --seq-len (transformers run_glue.py default, pad_to_max_length=True)',
}
BASE = 'bucketed'

def parse_args(argv=None):
    p = C.script_parser(__doc__, 'bench/results/finetune_epoch.json', 'preset tiny, batch 4, length 32, 2 rounds × 2 steps', cpu_only=False)
    p.add_argument('--preset', default='atombert-8m', help='atombert config preset (default atombert-8m)')
    p.add_argument('--batch-size', type=int, default=32, help='examples per step (finetune default 32)')
    p.add_argument('--seq-len', type=int, default=128, help='truncation length, and the fixed variant pads to it')
    p.add_argument('--repeats', type=int, default=4, help='rounds; each round runs every variant once (one `fit` call each)')
    p.add_argument('--steps', type=int, default=8, help='timed steps per variant and round')
    p.add_argument('--warmup', type=int, default=1, help='untimed steps at the start of every `fit` call')
    p.add_argument('--precision', choices=('fp32', 'bf16'), default='fp32', help="fit's precision (bf16 = autocast)")
    p.add_argument('--data', default=None, help='MNLI train data for load_mnli (default: the 20k sample in the shared data)')
    p.add_argument('--tokenizer', default=None, help='tokenizer directory (default: WordPiece trained on WikiText-2 raw valid+test)')
    p.add_argument('--matmul-size', type=int, default=2048, help='n of the n×n matmul probe run beside each variant')
    p.add_argument('--seed', type=int, default=0)
    args = C.finish_args(p.parse_args(argv))
    if args.small: args.steps, args.matmul_size = 2, 512
    for name in ('steps', 'matmul_size'):
        if getattr(args, name) <= 0: raise SystemExit(f'error: --{name.replace("_", "-")} must be > 0, got {getattr(args, name)}')
    from atombert.config import PRESETS
    if args.preset not in PRESETS: raise SystemExit(f'error: --preset {args.preset!r} is not one of {list(PRESETS)}')
    return args

# ---------------------------------------------------------------- batches

def pad_to(batch:dict, width:int, pad_id:int) -> dict:
    "`batch` with its sequences padded on the right to `width` (ids with `pad_id`, types and mask with 0)."
    def pad(k, t):
        if k not in ('input_ids', 'token_type_ids', 'attention_mask'): return t
        return F.pad(t, (0, width - t.shape[1]), value=pad_id if k == 'input_ids' else 0)
    return {k: pad(k, t) for k, t in batch.items()}

class Scripted(Dataset):
    """The batches `order` of `plan` (a `PairBatches`), handed out in that order whatever index `fit` asks for, so
    the timed steps are the chosen ones. The time of each hand-out is recorded: the gap between two hand-outs is one
    full step (reading and padding the batch, collate, forward, backward, clipping, optimizer, schedule)."""
    def __init__(self, plan, order:list, device):
        self.plan, self.order, self.device, self.stamps = plan, list(order), device, []
    def __len__(self): return len(self.order)
    def __getitem__(self, i):
        C.sync(self.device); self.stamps.append(time.perf_counter())
        return self.plan[self.order[(len(self.stamps) - 1) % len(self.order)]]

def plan_of(variant, encoded, args, pad_id):
    "The epoch-0 batches of `variant` and the padded width of each."
    from atombert.batches import PairBatches
    plan = PairBatches(encoded, args.batch_size, pad_id, shuffle=True, bucket=variant == 'bucketed', seed=args.seed)
    widths = np.array([args.seq_len if variant == 'fixed' else int(plan.lengths[b].max()) for b in plan.plan])
    sizes = np.array([len(b) for b in plan.plan])
    return plan, widths, sizes

def chosen_batches(cost:np.ndarray, rounds:int, steps:int, seed:int) -> list[list[int]]:
    """`rounds × steps` batches spread evenly over the quantiles of `cost` (systematic sampling, so the mean step time
    of the chosen batches estimates the epoch's mean), dealt to the rounds in turn, each round's share shuffled."""
    k = rounds * steps
    if k > len(cost): raise SystemExit(f'error: --repeats × --steps = {k} timed steps, but an epoch has only {len(cost)} batches')
    by_cost = np.argsort(cost, kind='stable')
    picks = by_cost[((np.arange(k) + 0.5) * len(cost) / k).astype(int)]
    g = np.random.default_rng(seed)
    return [g.permutation(picks[r::rounds]).tolist() for r in range(rounds)]

# ---------------------------------------------------------------- one variant's training steps through fit

def runner(variant, plan, rounds_batches, warm, tail, config, init_state, args, pad_id, record, workdir):
    "A function that runs the next round of `variant`: a fresh model from `init_state` trained by `fit` on its batches."
    from atombert.finetuning import ClassificationTask
    from atombert.batches import collate_batches
    from atombert.model import AtomBertForSequenceClassification
    from atombert.training import TrainArgs, fit
    collate = collate_batches if variant != 'fixed' else (lambda items: pad_to(collate_batches(items), args.seq_len, pad_id))
    state = dict(round=0)
    def run():
        r = state['round']; state['round'] += 1
        order = [warm] * args.warmup + rounds_batches[r] + [tail]   # the tail batch's step ends the last timed one
        data = Scripted(plan, order, args.device)
        model = AtomBertForSequenceClassification(config); model.load_state_dict(init_state)
        train_args = TrainArgs(out_dir=str(Path(workdir)/f'{variant}-{r}'), max_steps=len(order), batch_size=1, lr=5e-5,
                               warmup=0.1, precision=args.precision, seed=args.seed + r, log_every=10 ** 9,
                               device=args.device)
        fit(model, data, collate, ClassificationTask(), train_args, progress=False)
        if len(data.stamps) != len(order): raise RuntimeError(f'{variant}: fit read {len(data.stamps)} batches, expected {len(order)}')
        gaps = np.diff(data.stamps)[args.warmup:]                   # one gap per timed step
        record[variant].append(gaps.tolist())
        print(f'  round {r + 1}: {variant:8s} {len(gaps)} steps, mean {gaps.mean() * 1e3:,.0f} ms/step', flush=True)
    return run

def variant_numbers(v:str, planned:tuple, lengths, record:list, chosen:list, ref:list, mm_rate:float) -> dict:
    "One batching's epoch: its padded and real tokens, its timed steps, and the epoch time they give."
    plan, widths, sizes = planned
    padded = widths * sizes
    real = np.array([int(lengths[b].sum()) for b in plan.plan])
    steps = [s for r in record for s in r]
    timed = [i for r in chosen for i in r]
    mean_step = statistics.fmean(steps)
    epoch_s = mean_step * len(plan)
    # each step's time in units of the matmul probe beside it, scaled back to seconds at the run's median rate
    norm_steps = [s * ref[r] / mm_rate for r, rs in enumerate(record) for s in rs]
    return dict(
        description=VARIANTS[v], batches_per_epoch=len(plan), examples_per_epoch=int(sizes.sum()),
        padded_tokens_per_epoch=int(padded.sum()), real_tokens_per_epoch=int(real.sum()),
        padding_fraction=1 - real.sum() / padded.sum(), mean_padded_width=float(padded.sum() / sizes.sum()),
        full_mnli_padded_tokens_per_epoch=float(padded.sum() * FULL_MNLI_TRAIN / sizes.sum()),
        timed_steps=len(steps), timed_examples=int(sizes[timed].sum()),
        timed_mean_padded_tokens_per_step=float(padded[timed].mean()), epoch_mean_padded_tokens_per_step=float(padded.mean()),
        ms_per_step=mean_step * 1e3, ms_per_step_median=statistics.median(steps) * 1e3, steps_per_s=1 / mean_step,
        ms_all=[[s * 1e3 for s in r] for r in record],
        real_tokens_per_s=float(real[timed].sum() / sum(steps)), padded_tokens_per_s=float(padded[timed].sum() / sum(steps)),
        examples_per_s=float(sizes[timed].sum() / sum(steps)),
        epoch_seconds=epoch_s, epoch_seconds_per_round=[statistics.fmean(r) * len(plan) for r in record],
        full_mnli_epoch_seconds=epoch_s * FULL_MNLI_TRAIN / sizes.sum(),
        normalized_epoch_seconds=statistics.fmean(norm_steps) * len(plan),
        padded_tokens_timed=[padded[r].tolist() for r in chosen],   # aligned with ms_all
        matmul_flops_per_s_next_to=ref)

def step_cost_fit(variants:dict) -> dict:
    "Where the time goes: one least-squares line over every timed step of every variant, ms = a + b · padded tokens."
    x = np.array([t for v in variants.values() for r in v['padded_tokens_timed'] for t in r], dtype=float)
    y = np.array([t for v in variants.values() for r in v['ms_all'] for t in r])
    slope, intercept = np.polyfit(x, y, 1)
    return dict(ms_per_step=float(intercept), ms_per_1000_padded_tokens=float(slope * 1000),
                r2=float(1 - ((y - (intercept + slope * x)) ** 2).sum() / ((y - y.mean()) ** 2).sum()))

def report(result:dict, args, n:int):
    "The table and the lines under it."
    variants, step_cost, mm_rate = result['variants'], result['step_cost_fit'], result['matmul']['flops_per_s']
    print()
    rows = [dict(name=v, **r, epoch_min=r['epoch_seconds'] / 60, full_h=r['full_mnli_epoch_seconds'] / 3600) for v, r in variants.items()]
    C.print_table(rows, [('name', 'variant', ''), ('padded_tokens_per_epoch', 'padded tokens/epoch', ',.0f'),
                         ('padding_fraction', 'padding', '.1%'), ('token_ratio_vs_bucketed', 'tokens ×', '.2f'),
                         ('ms_per_step', 'ms/step', ',.0f'), ('steps_per_s', 'steps/s', '.2f'),
                         ('padded_tokens_per_s', 'padded tok/s', ',.0f'), ('epoch_min', f'{n // 1000}k epoch min', ',.1f'),
                         ('full_h', 'full MNLI epoch h', ',.2f'), ('time_ratio_vs_bucketed', 'time ×', '.2f'),
                         ('paired_time_ratio_vs_bucketed', 'paired', '.2f'), ('normalized_time_ratio_vs_bucketed', 'normalized', '.2f')])
    print(f'\nmatmul {args.matmul_size}² float32 beside the steps: {mm_rate / 1e9:.1f} GFLOP/s (median)')
    print(f'step time ≈ {step_cost["ms_per_step"]:,.0f} ms + {step_cost["ms_per_1000_padded_tokens"]:,.0f} ms per 1,000 padded tokens '
          f'(least squares over all timed steps, R² {step_cost["r2"]:.2f})')
    print(f'fixed padding to {args.seq_len} vs bucketed: {result["token_efficiency_ratio"]:.2f}× the padded tokens, '
          f'{result["time_ratio"]:.2f}× the epoch time (paired {result["paired_time_ratio"]:.2f}×, matmul-normalized '
          f'{result["normalized_time_ratio"]:.2f}×)')

def main(argv=None):
    args = parse_args(argv)
    from atombert.config import AtomBertConfig
    from atombert.mnli import load_mnli
    from atombert.batches import encode_examples, pad_id_of
    from atombert.model import AtomBertForSequenceClassification
    from atombert.tokenizer import load_tokenizer
    data_path = args.data or str(C.shared_path(C.MNLI_TRAIN_SAMPLE))     # the 20k sample, as the help says (the folder holds more)
    train = load_mnli(data_path, 'train')
    tok = load_tokenizer(args.tokenizer) if args.tokenizer else C.wikitext_tokenizer(AtomBertConfig.preset(args.preset).vocab_size, args.seq_len)
    encoded = encode_examples(tok, train, args.seq_len)
    pad_id, n = pad_id_of(tok), len(train)
    lengths = np.array([len(x) for x in encoded['input_ids']])
    config = AtomBertConfig.preset(args.preset, vocab_size=tok.get_vocab_size(), num_labels=3)
    if args.seq_len > config.max_position_embeddings:
        raise SystemExit(f'error: --seq-len {args.seq_len} exceeds the preset\'s max_position_embeddings={config.max_position_embeddings}')
    torch.manual_seed(args.seed)
    init_state = AtomBertForSequenceClassification(config).state_dict()

    print(f'finetune epoch: preset {args.preset} (vocab {config.vocab_size:,}), {n:,} examples of {data_path}, batch '
          f'{args.batch_size}, max length {args.seq_len}, {args.threads} threads, {args.device}, {args.precision}; '
          f'{args.repeats} rounds × {args.steps} timed steps per variant')
    print(f'pair lengths: median {np.median(lengths):.0f}, mean {lengths.mean():.1f}, 5th–95th percentile '
          f'{np.percentile(lengths, 5):.0f}–{np.percentile(lengths, 95):.0f}, {np.mean(lengths >= args.seq_len):.2%} at the limit of {args.seq_len} (cut there)')
    plans, record, fns, chosen = {}, {v: [] for v in VARIANTS}, {}, {}
    with tempfile.TemporaryDirectory() as workdir:
        for v in VARIANTS:
            plan, widths, sizes = plans[v] = plan_of(v, encoded, args, pad_id)
            cost = widths * sizes
            chosen[v] = chosen_batches(cost, args.repeats, args.steps, args.seed)
            by_cost = np.argsort(cost, kind='stable')
            warm, tail = int(by_cost[len(cost) // 2]), int(by_cost[0])   # untimed: a median batch first, the cheapest last
            fns[v] = runner(v, plan, chosen[v], warm, tail, config, init_state, args, pad_id, record, workdir)
        times, ref, mm_rate = C.timed_beside_matmul(fns, args, warmup=0, log=lambda s: None)   # matmul rate beside each fit call

    variants = {v: variant_numbers(v, plans[v], lengths, record[v], chosen[v], ref[v], mm_rate) for v in VARIANTS}
    step_cost = step_cost_fit(variants)
    b = variants[BASE]
    for v, r in variants.items():
        r.update(token_ratio_vs_bucketed=r['padded_tokens_per_epoch'] / b['padded_tokens_per_epoch'],
                 time_ratio_vs_bucketed=r['epoch_seconds'] / b['epoch_seconds'],
                 paired_time_ratio_vs_bucketed=statistics.median(x / y for x, y in zip(r['epoch_seconds_per_round'], b['epoch_seconds_per_round'])),
                 normalized_time_ratio_vs_bucketed=r['normalized_epoch_seconds'] / b['normalized_epoch_seconds'])
    f = variants['fixed']
    result = dict(benchmark='finetune_epoch', machine=C.machine_info(args.device), args=vars(args), config=config.to_dict(),
                  data=dict(source=data_path, examples=n, full_mnli_train_examples=FULL_MNLI_TRAIN,
                            tokenizer=args.tokenizer or f'WordPiece trained on {", ".join(C.WIKITEXT_RAW)}',
                            vocab_size=tok.get_vocab_size(), length_median=float(np.median(lengths)), length_mean=float(lengths.mean()),
                            length_p5=float(np.percentile(lengths, 5)), length_p95=float(np.percentile(lengths, 95)),
                            truncated_fraction=float(np.mean(lengths >= args.seq_len))),
                  matmul=dict(n=args.matmul_size, flops_per_s=mm_rate), variants=variants, step_cost_fit=step_cost,
                  token_efficiency_ratio=f['token_ratio_vs_bucketed'], time_ratio=f['time_ratio_vs_bucketed'],
                  paired_time_ratio=f['paired_time_ratio_vs_bucketed'], normalized_time_ratio=f['normalized_time_ratio_vs_bucketed'],
                  method=('epoch time = mean measured step time × batches per epoch; the timed batches are spread evenly over '
                          'the quantiles of padded tokens per batch of the epoch plan; full MNLI scales the 20k-sample epoch by '
                          'examples, assuming the same length distribution'))

    report(result, args, n)
    print(f'wrote {C.write_json(args.out, result)}')
    return result

if __name__ == '__main__': main()

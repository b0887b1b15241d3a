"""Does bf16 train as well as float32? The demo's pretraining (`small`, Pre-LN, 300 steps of 32 × 64 tokens on the
builtin corpus, one shared tokenizer) in each precision with each of --seeds: held-out MLM loss, SOP accuracy and wall
time; then each seed's float32-pretrained model finetuned on the demo's NLI set (3 epochs, lr 2e-4) in each precision
and scored on its matched validation pairs. The two precisions alternate in each seed, so a host that changes speed
slows both. bf16 pays only where the CPU has it natively (AVX512_BF16 or AMX): the JSON records the CPU.

    python bench/bf16_training.py --threads 1 --out bench/studies/bf16_training.json   # about 25 minutes on 2 cores
    python bench/bf16_training.py --small                                               # CI smoke size
"""
import json, statistics, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C

PRECISIONS = ('fp32', 'bf16')
DEMO_LAYOUT = {'norm': 'pre', 'initializer_range': 0.05}      # the demo's (`atombert run --demo`)

def parse_args(argv=None):
    p = C.script_parser(__doc__, 'bench/results/bf16_training.json', 'preset tiny, 12 pretraining steps, 60 finetuning pairs, one seed')
    p.add_argument('--preset', default='small')
    p.add_argument('--steps', type=int, default=300, help='pretraining steps')
    p.add_argument('--seeds', default='0,1,2')
    p.add_argument('--finetune-pairs', type=int, default=0, help='first N builtin NLI train pairs (0: all 3,000)')
    p.add_argument('--work', default='runs/bf16_training', help='scratch folder: the token cache, and a new subfolder for the runs')
    args = p.parse_args(argv)
    if args.small: args.preset, args.steps, args.seeds, args.finetune_pairs = 'tiny', 12, '0', 60
    try: args.seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
    except ValueError as e: raise SystemExit(f'error: --seeds are comma-separated whole numbers ({e})')
    if not args.seeds: raise SystemExit('error: --seeds names no seed')
    if args.steps < 1 or args.finetune_pairs < 0: raise SystemExit('error: --steps must be >= 1 and --finetune-pairs >= 0')
    return C.set_threads(args)

def pretrained(args, out: Path, precision: str, seed: int) -> dict:
    "One pretraining run: its last held-out MLM loss and SOP accuracy, and its wall time (the tokenizer and tokens cached before)."
    from atombert.logs import read_metrics
    from atombert.pretrain import pretrain
    t = time.perf_counter()
    pretrain('builtin', str(out), args.preset, seq_len=64, batch_size=32, max_steps=args.steps, eval_every=max(1, args.steps // 5),
             config_overrides=DEMO_LAYOUT, precision=precision, seed=seed, cache_dir=str(Path(args.work)/'cache'), progress=False)
    assert json.loads((out/'run.json').read_text())['args']['precision'] == precision    # what ran, not what 'auto' would pick
    seconds = time.perf_counter() - t
    last = [r for r in read_metrics(out) if r['split'] == 'eval'][-1]
    return dict(mlm_loss=last['mlm_loss'], sop_accuracy=last['sop_accuracy'], seconds=seconds)

def finetuned(args, model_dir: Path, out: Path, precision: str, seed: int, train, dev) -> dict:
    "The demo's finetuning of `model_dir` in `precision`: accuracy on the matched validation pairs, and its wall time."
    from atombert.evaluation import evaluate_mnli, load_finetuned
    from atombert.finetuning import finetune
    t = time.perf_counter()
    finetune(model_dir, train, None, out, epochs=3, lr=2e-4, precision=precision, seed=seed, progress=False)
    seconds = time.perf_counter() - t
    model, tok = load_finetuned(out)
    return dict(accuracy=evaluate_mnli(model, tok, dev)['accuracy'], seconds=seconds)

def main(argv=None):
    args = parse_args(argv)
    import tempfile
    from atombert.mnli import load_mnli
    Path(args.work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix='runs-', dir=args.work))      # this study's runs: new, so nothing of another is reused
    train, dev = C.first(load_mnli('builtin', 'train'), args.finetune_pairs), load_mnli('builtin', 'validation_matched')
    pretrained(with_changes(args, steps=1), work/'warm', 'fp32', 0)    # the tokenizer and token cache: no timed run pays for them
    rows = []
    for seed in args.seeds:
        order = PRECISIONS if seed % 2 == 0 else PRECISIONS[::-1]       # alternate: drift in the host's speed hits both
        pre = {p: pretrained(args, work/f'pre_{p}_{seed}', p, seed) for p in order}
        fine = {p: finetuned(args, work/f'pre_fp32_{seed}', work/f'nli_{p}_{seed}', p, seed, train, dev) for p in order}
        rows += [dict(seed=seed, precision=p, **{f'pretrain_{k}': v for k, v in pre[p].items()},
                      **{f'finetune_{k}': v for k, v in fine[p].items()}) for p in PRECISIONS]
        print(f'seed {seed}: ' + '; '.join(f"{p} MLM {pre[p]['mlm_loss']:.3f}, SOP {pre[p]['sop_accuracy']:.2f}, "
                                           f"{pre[p]['seconds']:.0f} s, NLI {100 * fine[p]['accuracy']:.1f}%" for p in PRECISIONS), flush=True)
    mean = lambda p, k: statistics.mean(r[k] for r in rows if r['precision'] == p)
    summary = dict(pretrain_speedup=mean('fp32', 'pretrain_seconds') / mean('bf16', 'pretrain_seconds'),
                   mlm_loss_difference=mean('bf16', 'pretrain_mlm_loss') - mean('fp32', 'pretrain_mlm_loss'),
                   sop_accuracy_difference=mean('bf16', 'pretrain_sop_accuracy') - mean('fp32', 'pretrain_sop_accuracy'),
                   finetune_accuracy_difference=mean('bf16', 'finetune_accuracy') - mean('fp32', 'finetune_accuracy'))
    C.print_table(rows, [('seed', 'seed', 'd'), ('precision', 'precision', 's'), ('pretrain_mlm_loss', 'held-out MLM loss', '.3f'),
                         ('pretrain_sop_accuracy', 'SOP accuracy', '.2f'), ('pretrain_seconds', 'pretraining s', '.0f'),
                         ('finetune_accuracy', 'NLI accuracy', '.1%'), ('finetune_seconds', 'finetuning s', '.0f')])
    print(f"bf16 / fp32: pretraining {summary['pretrain_speedup']:.2f}x as fast, held-out MLM loss {summary['mlm_loss_difference']:+.3f}, "
          f"SOP {100 * summary['sop_accuracy_difference']:+.1f} points, NLI {100 * summary['finetune_accuracy_difference']:+.1f} points")
    result = dict(args=vars(args), machine=C.machine_info('cpu'), rows=rows, summary=summary,
                  commands=dict(pretrain='atombert pretrain --corpus builtin --preset small --seq-len 64 --batch-size 32 --max-steps 300 '
                                         '--config-overrides \'{"norm":"pre","initializer_range":0.05}\' --eval-every 60 --precision P --seed S',
                                finetune='atombert finetune --model DIR --data builtin --epochs 3 --lr 2e-4 --precision P --seed S'))
    print(f'wrote {C.write_json(args.out, result)}')
    return result

def with_changes(args, **changes):
    "A copy of `args` with `changes`."
    import argparse
    return argparse.Namespace(**(vars(args) | changes))

if __name__ == '__main__':
    main()

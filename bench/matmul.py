"""The machine's measured matmul FLOP/s (n×n, median), and the FLOPs of one atombert training step counted from
the config (formula: `atombert.model.pretrain_step_flops`) checked against `torch.utils.flop_counter.FlopCounterMode`
on a real step. `pretrain_step.py` uses the same pieces for its MFU.

    python bench/matmul.py                 # 2048², atombert-8m at batch 32 × 128
    python bench/matmul.py --small         # CI smoke size
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
import common as C

def parse_args(argv=None):
    p = C.script_parser(__doc__, 'bench/results/matmul.json', '512², preset tiny, batch 4 × 32, 2 repeats', cpu_only=False)
    p.add_argument('--matmul-size', type=int, default=2048)
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--preset', default='atombert-8m')
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--seq-len', type=int, default=128)
    p.add_argument('--precision', choices=('fp32', 'bf16'), default='fp32', help='dtype of the matmul')
    args = C.finish_args(p.parse_args(argv))
    if args.small: args.matmul_size = 512
    if args.matmul_size <= 0: raise SystemExit('error: --matmul-size must be > 0')
    return args

def main(argv=None):
    args = parse_args(argv)
    from atombert.config import AtomBertConfig
    from atombert.model import AtomBertForPreTraining
    dtype = torch.bfloat16 if args.precision == 'bf16' else torch.float32
    mm = C.matmul_rate(args.matmul_size, args.repeats, args.warmup, args.device, dtype)
    print(f'matmul {args.matmul_size}² {mm["dtype"]}, {args.threads} threads, {args.device}: '
          f'{mm["flops_per_s"] / 1e9:.1f} GFLOP/s median, {mm["best_flops_per_s"] / 1e9:.1f} best of {args.repeats}')

    config = AtomBertConfig.preset(args.preset)
    batch = C.pretraining_batch(config, args.batch_size, args.seq_len, args.device)
    masked = int((batch['labels'] != -100).sum())
    formula = C.pretrain_step_flops(config, args.batch_size, args.seq_len, masked)
    model = AtomBertForPreTraining(config).to(args.device)
    def step():   # forward + backward; the optimizer step has no matmuls
        model(**batch).loss.backward()
    counted, per_op = C.counted_flops(step)
    ratio = counted / formula['train_step']

    print(f'\natombert {args.preset} training step, batch {args.batch_size} × {args.seq_len}, {masked} masked positions')
    C.print_table([dict(part=k, gflop=v / 1e9, share=v / formula['forward_total']) for k, v in formula['forward'].items()]
                  + [dict(part='forward total', gflop=formula['forward_total'] / 1e9, share=1.0),
                     dict(part='train step (3× forward)', gflop=formula['train_step'] / 1e9)],
                  [('part', 'forward part', ''), ('gflop', 'GFLOP', '.3f'), ('share', 'share', '.1%')])
    print(f'\nformula {formula["train_step"] / 1e9:.2f} GFLOP, FlopCounterMode {counted / 1e9:.2f} GFLOP, ratio {ratio:.4f} '
          f'(the counter adds the attention-score recompute of the SDPA backward)')
    print(f'at the median matmul rate a step would take at least {formula["train_step"] / mm["flops_per_s"]:.2f} s '
          f'({args.batch_size * args.seq_len * mm["flops_per_s"] / formula["train_step"]:,.0f} tokens/s at 100% MFU)')
    result = dict(benchmark='matmul', machine=C.machine_info(args.device), args=vars(args), matmul=mm,
                  flops=dict(preset=args.preset, batch_size=args.batch_size, seq_len=args.seq_len, masked_positions=masked,
                             formula_forward=formula['forward'], formula_forward_total=formula['forward_total'],
                             formula_train_step=formula['train_step'], flop_counter_train_step=counted,
                             counter_over_formula=ratio, counter_per_op=per_op,
                             tokens_per_s_at_full_matmul_rate=args.batch_size * args.seq_len * mm['flops_per_s'] / formula['train_step']))
    print(f'wrote {C.write_json(args.out, result)}')
    return result

if __name__ == '__main__': main()

"""Tokens/s of one full pretraining step (forward + backward + optimizer step; MLM with 15% masked positions + SOP)
of atombert vs transformers' `AlbertForPreTraining`: same config, same weights, same batch, same threads,
interleaved in one run. Also: peak memory of each (a fresh process each), the step's FLOPs (formula and
`FlopCounterMode`), the measured matmul rate and the achieved fraction of it (MFU).

    python bench/pretrain_step.py                      # atombert-8m, batch 32 × 128, all cores
    python bench/pretrain_step.py --small              # CI smoke size
    python bench/pretrain_step.py --profile            # also a torch.profiler table of one step of each
    python bench/pretrain_step.py --atombert-precision bf16   # atombert under bf16 autocast vs transformers in fp32
    python bench/pretrain_step.py --rtd                # also atombert's ELECTRA step (generator + discriminator), vs its MLM step
"""
import json, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
import common as C

TARGETS = dict(ratio=2.0, mfu=0.75)   # issue 5: ≥ 2× transformers, ≥ 75% of the matmul rate

def parse_args(argv=None):
    p = C.base_parser(__doc__.splitlines()[0], 'bench/results/pretrain_step.json', repeats=5, warmup=1)
    p.add_argument('--matmul-size', type=int, default=2048, help='n of the n×n matmul whose rate MFU is relative to')
    p.add_argument('--profile', action='store_true', help='write a torch.profiler table of one step of each contender')
    p.add_argument('--atombert-precision', choices=('fp32', 'bf16'), default=None,
                   help="atombert's precision when it differs from --precision's (which transformers and the matmul probe use): "
                        'bf16 compares each as its user runs it on a CPU with native bf16')
    p.add_argument('--rtd', action='store_true', help="also time atombert's replaced-token-detection step (ELECTRA: the "
                   'generator, a quarter as wide, samples at the masked positions; the discriminator scores every token)')
    p.add_argument('--transformers-attention', choices=('sdpa', 'eager'), default='sdpa',
                   help="transformers' attention: sdpa (its default) or eager (its own matmul + softmax)")
    p.add_argument('--generator-size', type=float, default=0.25, help='with --rtd: the generator width, a fraction of the model width')
    args = C.finish_args(p.parse_args(argv))
    if not 0 < args.generator_size <= 1: raise SystemExit(f'error: --generator-size {args.generator_size} must be in (0, 1]')
    args.atombert_precision = args.atombert_precision or args.precision
    if args.small: args.matmul_size = 512
    return args

# ---------------------------------------------------------------- the two contenders

def build_atombert(config, device):
    from atombert.model import AtomBertForPreTraining
    from atombert.training import make_optimizer, TrainArgs
    model = AtomBertForPreTraining(config).to(device)
    return model, make_optimizer(model, TrainArgs())

def build_transformers(config, device, atom_model=None, attn:str='sdpa'):
    "Same weights as `atom_model` when given (timing); transformers' own init otherwise (memory: same sizes); `attn` attention."
    if atom_model is not None: model = C.albert_twin(atom_model, 'AlbertForPreTraining', attn)
    else:
        import transformers
        from atombert.albert import albert_config_dict
        d = albert_config_dict(config); d.pop('atombert')
        model = transformers.AlbertForPreTraining(transformers.AlbertConfig(**d, attn_implementation=attn))
    model = model.to(device)
    return model, torch.optim.AdamW(model.parameters())   # what a transformers user gets by default

def atombert_loss(model, b):
    return model(b['input_ids'], b['attention_mask'], b['token_type_ids'], labels=b['labels'],
                 sentence_label=b['sentence_label']).loss

def build_rtd(config, device, generator_size):
    from atombert.pretrain import Electra
    from atombert.training import make_optimizer, TrainArgs
    model = Electra(config, generator_size).to(device)
    return model, make_optimizer(model, TrainArgs())

def rtd_loss(model, b):
    "ELECTRA's objective as `atombert pretrain --token-objective rtd` optimizes it (RTDTask's weights)."
    from atombert.pretrain import RTDTask
    out = model(b['input_ids'], b['attention_mask'], b['token_type_ids'], b['labels'], b['sentence_label'])
    return out.mlm_loss + RTDTask().weights['rtd_loss'] * out.rtd_loss + out.sentence_loss

def transformers_loss(model, b):
    return model(input_ids=b['input_ids'], attention_mask=b['attention_mask'], token_type_ids=b['token_type_ids'],
                 labels=b['labels'], sentence_order_label=b['sentence_label']).loss

LOSSES = dict(atombert=atombert_loss, transformers=transformers_loss)

def precision_of(name, args): return args.atombert_precision if name == 'atombert' else args.precision

def make_step(model, opt, loss_fn, batch, args, precision):
    fwd = torch.compile(model) if args.compile else model
    def step():
        opt.zero_grad(set_to_none=True)
        with C.autocast(precision, args.device): loss = loss_fn(fwd, batch)
        loss.backward()
        opt.step()
    return step

def memory_worker(args, config, batch):
    "One contender alone in this fresh process: its memory, printed as the last line of JSON."
    build = (lambda: build_atombert(config, args.device)) if args.memory_of == 'atombert' else \
            (lambda: build_transformers(config, args.device, attn=args.transformers_attention))
    loss_fn = LOSSES[args.memory_of]
    def run(state): make_step(*state, loss_fn, batch, args, precision_of(args.memory_of, args))()
    print(json.dumps(C.measure_memory(build, run, args.device)))

# ---------------------------------------------------------------- profile

def profile_steps(steps:dict, path:Path) -> dict:
    "One profiled step of each contender: the table to `path`, the top ops (self time, ms) returned."
    from torch.profiler import profile, ProfilerActivity
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    text, top = [], {}
    for name, step in steps.items():
        step()
        with profile(activities=acts, record_shapes=True) as prof: step()
        ka = prof.key_averages()
        text += [f'==== {name}: one training step, ops by self CPU time', ka.table(sort_by='self_cpu_time_total', row_limit=30),
                 f'==== {name}: by input shape', prof.key_averages(group_by_input_shape=True).table(sort_by='self_cpu_time_total', row_limit=30)]
        rows = sorted(ka, key=lambda e: -e.self_cpu_time_total)[:15]
        top[name] = {e.key: round(e.self_cpu_time_total / 1e3, 1) for e in rows}
    path.write_text('\n'.join(text) + '\n')
    return top

# ---------------------------------------------------------------- main

def same_loss(models:dict, batch, args) -> dict:
    "Each contender's loss on the batch in eval mode (no dropout): the same weights must give the same loss."
    losses = {}
    for name, (m, _) in models.items():
        m.eval()
        with torch.no_grad(), C.autocast(precision_of(name, args), args.device): losses[name] = float(LOSSES[name](m, batch))
        m.train()
    print(f'  same weights, same loss: atombert {losses["atombert"]:.5f}, transformers {losses["transformers"]:.5f}')
    return losses

def flop_check(config, models:dict, batch, args, masked:int) -> dict:
    "FLOPs of a step by the formula (what each contender executes) and by FlopCounterMode on one real (eager) step."
    B, T = args.batch_size, args.seq_len
    formula = dict(atombert=C.pretrain_step_flops(config, B, T, masked),
                   transformers=C.pretrain_step_flops(config, B, T, B * T))   # transformers: logits at every position
    eager, counted = C.argparse.Namespace(**{**vars(args), 'compile': False}), {}
    for name, (m, o) in models.items():
        counted[name], counted[name + '_per_op'] = C.counted_flops(lambda: make_step(m, o, LOSSES[name], batch, eager, precision_of(name, args))())
    return dict(formula_train_step=formula['atombert']['train_step'], flop_counter_train_step=counted['atombert'],
                counter_over_formula=counted['atombert'] / formula['atombert']['train_step'],
                formula_forward=formula['atombert']['forward'], counter_per_op=counted['atombert_per_op'],
                transformers_formula_train_step=formula['transformers']['train_step'],
                transformers_flop_counter_train_step=counted['transformers'],
                transformers_counter_over_formula=counted['transformers'] / formula['transformers']['train_step'])

def contender(name:str, times:list, ref:list, flops:float, tokens:int, loss:float, memory:dict, args) -> dict:
    "A contender's numbers: median speed, FLOP/s, and the MFU only against a matmul probe of its own precision."
    t = C.median(times)
    mfu_rounds = [flops / x / m for x, m in zip(times, ref)] if precision_of(name, args) == args.precision else None
    return dict(precision=precision_of(name, args), tokens_per_s=tokens / t, ms_per_step=t * 1e3, ms_all=[x * 1e3 for x in times],
                loss=loss, flops_per_step=flops, flops_per_s=flops / t, mfu=mfu_rounds and C.median(mfu_rounds),
                mfu_per_round=mfu_rounds, **{k: memory.get(k) for k in ('peak_mb', 'model_mb')})

def main(argv=None):
    args = parse_args(argv)
    from atombert.config import AtomBertConfig
    config = AtomBertConfig.preset(args.preset)
    batch = C.pretraining_batch(config, args.batch_size, args.seq_len, args.device)
    if args.memory_of: return memory_worker(args, config, batch)

    B, T = args.batch_size, args.seq_len
    tokens, masked = B * T, int((batch['labels'] != -100).sum())
    mixed = args.atombert_precision != args.precision
    print(f'pretrain step: preset {args.preset}, batch {B} × {T} ({masked} masked), {args.threads} threads, {args.device}, '
          f'{f"atombert {args.atombert_precision}, transformers {args.precision}" if mixed else args.precision}'
          f'{", compiled" if args.compile else ""}')
    atom, atom_opt = build_atombert(config, args.device)
    models = dict(atombert=(atom, atom_opt), transformers=build_transformers(config, args.device, atom, args.transformers_attention))
    losses, flops = same_loss(models, batch, args), flop_check(config, models, batch, args, masked)

    steps = {name: make_step(m, o, LOSSES[name], batch, args, precision_of(name, args)) for name, (m, o) in models.items()}
    if args.rtd:      # timed in the same rounds: its cost relative to the MLM step is the number that matters
        steps['atombert RTD'] = make_step(*build_rtd(config, args.device, args.generator_size), rtd_loss, batch, args, args.atombert_precision)
    mm_dtype = torch.bfloat16 if args.precision == 'bf16' else torch.float32
    times, ref, matmul_rate = C.timed_beside_matmul(steps, args, mm_dtype)    # matmul rate next to each step
    memory = {} if args.no_memory else {
        name: C.memory_in_subprocess(__file__, C.forwarded_argv(args) + ['--atombert-precision', args.atombert_precision,
                                                                         '--transformers-attention', args.transformers_attention], name)
        for name in LOSSES}
    per_step = dict(atombert=flops['formula_train_step'], transformers=flops['transformers_formula_train_step'])
    contenders = {name: contender(name, times[name], ref[name], per_step[name], tokens, losses[name], memory.get(name, {}), args)
                  for name in LOSSES}
    ratio = contenders['atombert']['tokens_per_s'] / contenders['transformers']['tokens_per_s']
    result = dict(benchmark='pretrain_step', machine=C.machine_info(args.device),
                  args={k: v for k, v in vars(args).items() if k != 'memory_of'}, config=config.to_dict(),
                  batch=dict(batch_size=B, seq_len=T, tokens=tokens, masked_positions=masked),
                  matmul=dict(n=args.matmul_size, dtype=str(mm_dtype).removeprefix('torch.'), flops_per_s=matmul_rate,
                              flops_per_s_next_to=ref),
                  contenders=contenders, ratio=ratio, paired_ratio=C.paired_ratio(times, 'transformers', 'atombert'),
                  normalized_ratio=C.normalized_ratio(times, ref, 'transformers', 'atombert'), mfu=contenders['atombert']['mfu'],
                  flops=flops, targets=TARGETS,
                  meets_targets=dict(ratio=ratio >= TARGETS['ratio'],
                                     mfu=None if mixed else contenders['atombert']['mfu'] >= TARGETS['mfu']))
    if args.rtd:
        t = C.median(times['atombert RTD'])
        result['rtd'] = dict(generator_size=args.generator_size, tokens_per_s=tokens / t, ms_per_step=t * 1e3,
                             ms_all=[x * 1e3 for x in times['atombert RTD']],
                             mlm_step_over_rtd_step=C.paired_ratio(times, 'atombert RTD', 'atombert'))
    if args.profile:
        prof_path = Path(args.out).with_suffix('.profile.txt'); prof_path.parent.mkdir(parents=True, exist_ok=True)
        result['profile_top_ms'] = profile_steps(steps, prof_path)
        print(f'  profiler tables: {prof_path}')
    report(result, args)
    print(f'wrote {C.write_json(args.out, result)}')
    return result

def report(result:dict, args):
    "The table and the lines under it."
    contenders, f, mm = result['contenders'], result['flops'], result['matmul']
    atom, mixed = contenders['atombert'], args.atombert_precision != args.precision
    print()
    rows = [dict(name=n, **c, gflops=c['flops_per_s'] / 1e9, ratio=c['tokens_per_s'] / contenders['transformers']['tokens_per_s'])
            for n, c in contenders.items()]
    C.print_table(rows, [('name', 'contender', ''), ('tokens_per_s', 'tokens/s', ',.0f'), ('ms_per_step', 'ms/step', ',.0f'),
                         ('peak_mb', 'peak MB', ',.0f'), ('gflops', 'GFLOP/s', '.1f'), ('mfu', 'MFU', '.0%'), ('ratio', 'ratio', '.2f')])
    print(f"\nratio (median tokens/s) {result['ratio']:.2f}×, paired per-round ratio {result['paired_ratio']:.2f}×, matmul-normalized "
          f"ratio {result['normalized_ratio']:.2f}× (target ≥ {TARGETS['ratio']}×)")
    print(f"matmul {args.matmul_size}² {mm['dtype']}: {mm['flops_per_s'] / 1e9:.1f} GFLOP/s (median of probes run next to "
          f"the steps; MFU = median over rounds of step FLOP/s / the probes beside it)")
    print(f"atombert step: {f['formula_train_step'] / 1e9:.1f} GFLOP by formula, {f['flop_counter_train_step'] / 1e9:.1f} GFLOP "
          f"by FlopCounterMode (ratio {f['counter_over_formula']:.3f}); {atom['flops_per_s'] / 1e9:.1f} GFLOP/s = "
          + (f"MFU {atom['mfu']:.0%} (target ≥ {TARGETS['mfu']:.0%})" if not mixed else
             f"{atom['flops_per_s'] / mm['flops_per_s']:.0%} of the {mm['dtype']} matmul rate"))
    print(f"transformers step: {f['transformers_formula_train_step'] / 1e9:.1f} GFLOP (MLM logits at all {result['batch']['tokens']} "
          f"positions), MFU {contenders['transformers']['mfu']:.0%}")
    if args.rtd:
        r = result['rtd']
        print(f"atombert RTD step (generator {args.generator_size:g} × the width): {r['tokens_per_s']:,.0f} tokens/s, "
              f"{r['ms_per_step']:,.0f} ms; the MLM step is {r['mlm_step_over_rtd_step']:.2f}× as fast (paired per round)")

if __name__ == '__main__': main()

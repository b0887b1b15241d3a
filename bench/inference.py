"""Tokens/s of the encoder forward (inference) of atombert vs transformers' `AlbertModel` (same config, weights,
batch and threads, interleaved in one run), plus atombert with its Linear layers dynamically quantized to int8
(PyTorch's own `quantize_dynamic`, CPU only); peak memory of each (a fresh process each) and how close the int8
outputs stay to float32.

    python bench/inference.py                          # atombert-8m, batch 32 × 128, all cores
    python bench/inference.py --model DIR              # a real checkpoint (atombert or transformers ALBERT dir)
    python bench/inference.py --small                  # CI smoke size
"""
import contextlib, json, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
import torch.nn.functional as F
import common as C
from atombert.evaluation import quantize_int8     # the library's int8 path, measured here

TARGETS = dict(fp32_ratio=1.0, int8_ratio=1.8)   # issue 5: float32 at least equal, int8 ≥ 1.8× transformers float32

def parse_args(argv=None):
    p = C.base_parser(__doc__.splitlines()[0], 'bench/results/inference.json', repeats=10, warmup=2)
    p.add_argument('--model', default=None, help='a model directory to load instead of random weights of --preset')
    p.add_argument('--no-int8', action='store_true', help='skip the int8 contender')
    p.add_argument('--matmul-size', type=int, default=2048)
    args = C.finish_args(p.parse_args(argv))
    if args.small: args.matmul_size = 512
    return args

def build(name, args, config=None, atom=None):
    "Contender `name` in eval mode; the transformers twin copies `atom`'s weights when given."
    from atombert.model import AtomBertModel
    from atombert.albert import albert_config_dict
    if name == 'transformers':
        if atom is not None: model = C.albert_twin(atom, 'AlbertModel')
        else:
            import transformers
            d = albert_config_dict(config, 'AtomBertModel'); d.pop('atombert')
            model = transformers.AlbertModel(transformers.AlbertConfig(**d))
        return model.to(args.device).eval()
    if atom is None: atom = AtomBertModel.from_pretrained(args.model) if args.model else AtomBertModel(config)
    atom = atom.to(args.device).eval()
    return quantize_int8(atom) if name == 'atombert_int8' else atom

def forward_fn(name, model, batch, args):
    "A function running one forward over `batch`; returns the pooled output."
    fwd = torch.compile(model) if args.compile and name != 'atombert_int8' else model
    ctx = (lambda: C.autocast(args.precision, args.device)) if name != 'atombert_int8' else (lambda: contextlib.nullcontext())
    def f():
        with torch.inference_mode(), ctx():
            if name == 'transformers':
                out = fwd(input_ids=batch['input_ids'], attention_mask=batch['attention_mask'], token_type_ids=batch['token_type_ids'])
                return out.last_hidden_state, out.pooler_output
            return tuple(fwd(batch['input_ids'], batch['attention_mask'], batch['token_type_ids']))
    return f

def closeness(a, b) -> dict:
    "How far outputs `b` are from `a`: max abs diff, mean and min cosine over rows."
    a, b = a.float().flatten(1), b.float().flatten(1)
    cos = F.cosine_similarity(a, b, dim=1)
    return dict(max_abs_diff=float((a - b).abs().max()), cosine_mean=float(cos.mean()), cosine_min=float(cos.min()))

def contender(name:str, times:dict, ref:dict, flops:float, tokens:int, memory:dict) -> dict:
    "A contender's speed, against transformers (at --precision) three ways (medians, paired rounds, matmul-normalized), and its memory."
    t = C.median(times[name])
    return dict(tokens_per_s=tokens / t, ms_per_batch=t * 1e3, ms_all=[x * 1e3 for x in times[name]],
                ratio_vs_transformers=C.median(times['transformers']) / t,
                paired_ratio_vs_transformers=C.paired_ratio(times, 'transformers', name),
                normalized_ratio_vs_transformers=C.normalized_ratio(times, ref, 'transformers', name),
                flops_per_s=flops / t,   # int8 against the float matmul rate would mean nothing
                fraction_of_matmul_rate=None if name == 'atombert_int8' else C.median([flops / x / m for x, m in zip(times[name], ref[name])]),
                **{k: memory.get(k) for k in ('peak_mb', 'model_mb')})

def report(result:dict, args, int8:bool):
    "The table and the lines under it."
    contenders = result['contenders']
    print()
    rows = [dict(name=n, **c) for n, c in contenders.items()]
    C.print_table(rows, [('name', 'contender', ''), ('tokens_per_s', 'tokens/s', ',.0f'), ('ms_per_batch', 'ms/batch', ',.0f'),
                         ('peak_mb', 'peak MB', ',.0f'), ('model_mb', 'model MB', ',.0f'),
                         ('fraction_of_matmul_rate', 'of matmul', '.0%'), ('ratio_vs_transformers', 'ratio', '.2f')])
    print(f'\nmatmul {args.matmul_size}² {result["matmul"]["dtype"]}: {result["matmul"]["flops_per_s"] / 1e9:.1f} GFLOP/s; encoder forward {result["forward_flops"] / 1e9:.1f} GFLOP')
    a = result['agreement']['transformers_vs_atombert']['last_hidden_state']
    judged = args.precision == 'fp32'            # the targets are against transformers in float32
    print(f'{result["baseline"].split()[1]} atombert vs {result["baseline"]}: max abs diff {a["max_abs_diff"]:.2e} (last hidden state); '
          f'ratio {result["fp32_ratio"]:.2f}×, matmul-normalized {contenders["atombert"]["normalized_ratio_vs_transformers"]:.2f}×'
          + (f' (target ≥ {TARGETS["fp32_ratio"]}×)' if judged else ' (the targets are against transformers float32: not judged)'))
    if int8:
        q, gap = result['agreement']['int8_vs_fp32']['pooler_output'], result['int8_gap_to_target']
        print(f'int8: {result["int8_ratio"]:.2f}× {result["baseline"]} '
              f'(matmul-normalized {contenders["atombert_int8"]["normalized_ratio_vs_transformers"]:.2f}×'
              + (f'; target ≥ {TARGETS["int8_ratio"]}×, {"met" if gap <= 1 else f"needs {gap:.2f}× more"}' if judged else '') + '); '
              f'pooled output vs float32: max abs diff {q["max_abs_diff"]:.3g}, cosine mean {q["cosine_mean"]:.4f} min {q["cosine_min"]:.4f}')

def main(argv=None):
    args = parse_args(argv)
    from atombert.config import AtomBertConfig
    int8 = not args.no_int8 and args.device == 'cpu'
    config = AtomBertConfig.preset(args.preset) if not args.model else None
    if args.model:
        from atombert.checkpoint import load_pretrained_state
        config = load_pretrained_state(args.model)[0]
    batch = C.pretraining_batch(config, args.batch_size, args.seq_len, args.device)
    if args.memory_of:
        model_of = lambda: build(args.memory_of, args, config)
        print(json.dumps(C.measure_memory(model_of, lambda m: forward_fn(args.memory_of, m, batch, args)(), args.device)))
        return

    B, T = args.batch_size, args.seq_len
    tokens = B * T
    print(f'inference: {args.model or "preset " + args.preset}, batch {B} × {T}, {args.threads} threads, {args.device}, '
          f'{args.precision}{", compiled" if args.compile else ""}')
    atom = build('atombert', args, config)
    models = dict(atombert=atom, transformers=build('transformers', args, config, atom))
    if int8: models['atombert_int8'] = build('atombert_int8', args, config, atom)
    fns = {n: forward_fn(n, m, batch, args) for n, m in models.items()}

    eager = {n: forward_fn(n, m, batch, C.argparse.Namespace(**{**vars(args), 'compile': False}))() for n, m in models.items()}
    agreement = dict(transformers_vs_atombert=dict(last_hidden_state=closeness(eager['atombert'][0], eager['transformers'][0]),
                                                   pooler_output=closeness(eager['atombert'][1], eager['transformers'][1])))
    if int8: agreement['int8_vs_fp32'] = dict(last_hidden_state=closeness(eager['atombert'][0], eager['atombert_int8'][0]),
                                              pooler_output=closeness(eager['atombert'][1], eager['atombert_int8'][1]))

    mm_dtype = torch.bfloat16 if args.precision == 'bf16' else torch.float32
    times, ref, matmul_rate = C.timed_beside_matmul(fns, args, mm_dtype)    # matmul rate next to each forward

    memory = {}
    if not args.no_memory:
        for name in fns: memory[name] = C.memory_in_subprocess(__file__, C.forwarded_argv(args) + (['--model', args.model] if args.model else []), name)

    flops = C.encoder_forward_flops(config, B, T)
    contenders = {name: contender(name, times, ref, flops, tokens, memory.get(name, {})) for name in fns}
    result = dict(benchmark='inference', machine=C.machine_info(args.device),
                  args={k: v for k, v in vars(args).items() if k != 'memory_of'}, config=config.to_dict(),
                  batch=dict(batch_size=B, seq_len=T, tokens=tokens), forward_flops=flops,
                  matmul=dict(n=args.matmul_size, dtype=str(mm_dtype).removeprefix('torch.'), flops_per_s=matmul_rate,
                              flops_per_s_next_to=ref),
                  baseline=f"transformers {'float32' if args.precision == 'fp32' else 'bf16'}",   # what every ratio is against
                  contenders=contenders, agreement=agreement, targets=TARGETS,
                  fp32_ratio=contenders['atombert']['ratio_vs_transformers'],
                  int8_ratio=contenders['atombert_int8']['ratio_vs_transformers'] if int8 else None,
                  quantization=dict(api='torch.ao.quantization.quantize_dynamic', dtype='qint8',
                                    engine=torch.backends.quantized.engine) if int8 else None)
    if int8: result['int8_gap_to_target'] = TARGETS['int8_ratio'] / result['int8_ratio'] if args.precision == 'fp32' else None

    report(result, args, int8)
    print(f'wrote {C.write_json(args.out, result)}')
    return result

if __name__ == '__main__': main()

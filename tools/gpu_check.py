"""The GPU check (issue 15): one command, at most 8 minutes on one H100/H200-class GPU, one JSON and a printed table.

    bash tools/gpu_check.sh              # on the GPU machine (installs fastcore from .whl/ when it is missing)
    bash tools/gpu_check.sh --dry-run    # the same script on CPU at smoke size (CI runs it: tests/test_gpu_check.py)

Parts, each guarded (a failure is recorded in its part, the other parts still run, the exit status is 1 at the end):

1. `cuda_tests`: `python -m pytest -m cuda tests/test_cuda.py` (equal outputs with transformers on CUDA, bf16 and fp16
   training with the loss scaler and a forced overflow, flash attention selected, `torch.compile` equal to eager,
   checkpoint and exact resume on CUDA). In the dry run CUDA is hidden, so they are collected and all skipped.
2. `pretrain_step`: `bench/pretrain_step.py --device cuda --precision bf16` at the full recipe's batch (256 × 128,
   atombert-8m): atombert against transformers with SDPA attention, then again against transformers with eager
   attention (the same script, with its transformers twin built `attn_implementation='eager'`): tokens/s, MFU
   against the bf16 matmul rate measured beside each step (8192² matmuls), peak memory.
3. `pretraining`: `atombert.pretrain.pretrain` as `atombert run` calls it (atombert-8m, 30,000-entry tokenizer, 256 ×
   128, lr 1e-3, precision auto) on the builtin corpus (Python's documentation: it travels with Python) for 3 minutes
   of training, data pipeline included; then MNLI-style finetuning steps at `atombert run`'s finetuning batch (32) on
   pairs made from the same text, for 20 s. From both: tokens/s end to end, and the full recipe's wall time
   extrapolated (WikiText-103 × 2 epochs, then MNLI × 2 epochs), with every assumption in the JSON. The timed runs
   and the extrapolation are `tools/gpu_timing.py`; the run is a process of its own.

The JSON goes to `--out` (default bench/results/gpu_check.json) and, when $OUT is set (the GPU machine's folder whose
files come back), to $OUT/gpu_check.json with the whole log beside it ($OUT/gpu_check.log).
"""
import argparse, contextlib, io, json, os, shutil, signal, subprocess, sys, tempfile, threading, time, traceback
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_timing import environment, extrapolate, log  # noqa: E402  (the timed runs: tools/gpu_timing.py)

PARTS = ('environment', 'cuda_tests', 'pretrain_step', 'pretraining')

# Smoke sizes of the dry run (CPU, CI)
DRY = dict(preset='tiny', vocab_size=1000, seq_len=64, batch_size=16, pretrain_seconds=10, finetune_seconds=4, finetune_pairs=2000,
           workers_seconds=4, num_workers=2)


def recipe() -> dict:
    "The full recipe: `atombert run`'s defaults (atombert-8m, WikiText-103 × 2 epochs at 256 × 128, then MNLI × 2 epochs at 32)."
    from atombert.cli import flags_of
    d = {k: default for k, (_, _, default) in flags_of('run').items()}   # its own defaults and its training settings' (RUN_ARGS, TrainArgs)
    return {k: d[k] for k in ('preset', 'vocab_size', 'seq_len', 'pretrain_epochs', 'batch_size', 'lr', 'token_objective',
                              'finetune_batch_size', 'finetune_epochs', 'finetune_lr', 'precision', 'corpus', 'mnli')}

# ---------------------------------------------------------------- logging and subprocesses

def run_cmd(cmd, timeout: float, env=None, name='') -> dict:
    "Run `cmd` in ROOT, streaming its output (prefixed); killed with its whole process group after `timeout` s."
    log(f'$ {" ".join(map(str, cmd))}   (timeout {timeout:.0f} s)')
    t = time.time()
    p = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, errors='replace', start_new_session=True)
    timed_out = []
    def kill():
        timed_out.append(True)
        try: os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError: pass
    timer = threading.Timer(max(timeout, 1), kill); timer.start()
    out = []
    try:
        for line in p.stdout:
            line = line.rstrip('\n'); out.append(line)
            log(f'  {name}| {line}', raw=True)
        p.wait()
    finally: timer.cancel()
    return dict(returncode=p.returncode, timed_out=bool(timed_out), seconds=round(time.time() - t, 1), output='\n'.join(out))


def tail(text: str, n: int = 3000) -> str: return text[-n:]


def child_env(args) -> dict:
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
           'PYTHONPATH': os.pathsep.join([str(ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])}
    if args.dry_run: env['CUDA_VISIBLE_DEVICES'] = ''          # CPU only, also on a machine that has a GPU
    return env

# ---------------------------------------------------------------- part 0: the machine

def part_environment(args, ctx) -> dict: return environment(args.dry_run)

# ---------------------------------------------------------------- part 1: the CUDA tests

def junit_counts(path: Path) -> dict:
    "Outcome counts and per-test outcomes from pytest's JUnit XML."
    tests = []
    for case in ET.parse(path).getroot().iter('testcase'):
        outcome, message = 'passed', ''
        for tag in ('failure', 'error', 'skipped'):
            el = case.find(tag)
            if el is not None:
                outcome, message = {'failure': 'failed', 'error': 'error', 'skipped': 'skipped'}[tag], (el.get('message') or '')[:500]
                break
        tests.append(dict(name=case.get('name'), outcome=outcome, seconds=round(float(case.get('time') or 0), 2),
                          **({'message': message} if message else {})))
    count = lambda o: sum(t['outcome'] == o for t in tests)
    return dict(collected=len(tests), passed=count('passed'), failed=count('failed'), errors=count('error'),
                skipped=count('skipped'), tests=tests)


def part_cuda_tests(args, ctx) -> dict:
    junit, report = ctx['work']/'cuda_tests.xml', ctx['work']/'cuda_report.json'
    for f in (junit, report): f.unlink(missing_ok=True)
    env = child_env(args) | {'ATOMBERT_CUDA_REPORT': str(report)}
    r = run_cmd([sys.executable, '-m', 'pytest', '-m', 'cuda', 'tests/test_cuda.py', '-q', '-p', 'no:cacheprovider',
                 f'--junitxml={junit}'], ctx['timeout']('cuda_tests'), env, 'pytest')
    res = dict(command='python -m pytest -m cuda tests/test_cuda.py', returncode=r['returncode'], seconds=r['seconds'],
               timed_out=r['timed_out'], output_tail=tail(r['output']))
    if junit.exists(): res.update(junit_counts(junit))
    if report.exists(): res['measured'] = json.loads(report.read_text())
    n = res.get('collected', 0)
    if r['timed_out']: raise PartFailed('the CUDA tests ran past their time limit', res)
    if not n: raise PartFailed('no CUDA test was collected', res)
    if args.dry_run:
        if res['skipped'] != n or r['returncode'] != 0: raise PartFailed(f'dry run: {res["skipped"]} of {n} CUDA tests skipped, '
                                                                         'all should be (no GPU)', res)
    elif r['returncode'] != 0 or res['passed'] != n:
        raise PartFailed(f"{res['passed']} of {n} CUDA tests passed ({res['failed']} failed, {res['errors']} errors, "
                         f"{res['skipped']} skipped)", res)
    return res

# ---------------------------------------------------------------- part 2: bench/pretrain_step.py

def part_pretrain_step(args, ctx) -> dict:
    rec = ctx['recipe']
    common = ['--device', 'cpu', '--precision', 'bf16', '--small'] if args.dry_run else \
             ['--device', 'cuda', '--precision', 'bf16', '--preset', rec['preset'], '--batch-size', str(rec['batch_size']),
              '--seq-len', str(rec['seq_len']), '--matmul-size', '8192', '--repeats', '10', '--warmup', '3']
    res, errors = dict(args=common, runs={}), []
    for attn in ('sdpa', 'eager'):
        out = ctx['work']/f'pretrain_step_{attn}.json'; out.unlink(missing_ok=True)
        argv = [*common, '--transformers-attention', attn]
        r = run_cmd([sys.executable, ROOT/'bench'/'pretrain_step.py', *argv, '--out', out], ctx['timeout']('pretrain_step', runs_left=2 if attn == 'sdpa' else 1),
                    child_env(args), f'step/{attn}')
        run = dict(command=' '.join(['python', 'bench/pretrain_step.py', *argv]), transformers_attention=attn, returncode=r['returncode'], seconds=r['seconds'],
                   timed_out=r['timed_out'])
        if r['returncode'] == 0 and out.exists(): run['result'] = json.loads(out.read_text())
        else:
            run['output_tail'] = tail(r['output'])
            errors.append(f'pretrain_step with transformers {attn} ' + ('timed out' if r['timed_out'] else f'failed (exit {r["returncode"]})'))
        res['runs'][attn] = run
    res['rows'] = step_rows(res['runs'])
    if errors: raise PartFailed('; '.join(errors), res)
    return res


def step_rows(runs: dict) -> list:
    "One row per contender and run: tokens/s, ms/step, MFU, peak MB, loss, and atombert's speed-up over that transformers."
    rows = []
    for attn, run in runs.items():
        res = run.get('result')
        if not res: continue
        c = res['contenders']
        for name in ('atombert', 'transformers'):
            x = c[name]
            rows.append(dict(run=attn, contender='atombert' if name == 'atombert' else f'transformers ({attn})',
                             precision=x['precision'], tokens_per_s=x['tokens_per_s'], ms_per_step=x['ms_per_step'], mfu=x['mfu'],
                             peak_mb=x.get('peak_mb'), loss=x['loss'], flops_per_step=x['flops_per_step'],
                             atombert_speedup=(c['atombert']['tokens_per_s'] / x['tokens_per_s']) if name == 'transformers' else None,
                             paired_ratio=res['paired_ratio'] if name == 'transformers' else None,
                             matmul_flops_per_s=res['matmul']['flops_per_s'], matmul_n=res['matmul']['n']))
    return rows

def part_pretraining(args, ctx) -> dict:
    rec = ctx['recipe']
    if args.dry_run:
        spec = dict(DRY, device='cpu', lr=rec['lr'], precision=rec['precision'], log_every=2)
    else:
        # process start, tokenizer, pretokenizing, the run with workers and its setup, finetuning twice
        left = ctx['remaining']() - 2 * args.finetune_seconds - args.workers_seconds - (100 if args.workers_seconds else 90)
        seconds = max(30.0, min(args.pretrain_seconds, left))
        if seconds < args.pretrain_seconds: log(f'pretraining: {seconds:.0f} s instead of {args.pretrain_seconds} s (the 8-minute budget)')
        spec = dict(preset=rec['preset'], vocab_size=rec['vocab_size'], seq_len=rec['seq_len'], batch_size=rec['batch_size'],
                    lr=rec['lr'], precision=rec['precision'], device='cuda', pretrain_seconds=seconds,
                    finetune_seconds=args.finetune_seconds, finetune_pairs=20_000, log_every=20,
                    workers_seconds=args.workers_seconds, num_workers=args.num_workers)
    spec.update(finetune_batch_size=rec['finetune_batch_size'], finetune_lr=rec['finetune_lr'], work=str(ctx['work']/'pretraining'))
    result = ctx['work']/'pretraining.json'; result.unlink(missing_ok=True)
    timeout = spec['pretrain_seconds'] + 2 * spec['finetune_seconds'] + spec['workers_seconds'] + (300 if args.dry_run else 180)
    r = run_cmd([sys.executable, Path(__file__).with_name('gpu_timing.py'), json.dumps(spec), result], timeout, child_env(args), 'pretraining')
    res = dict(spec=spec, returncode=r['returncode'], seconds=r['seconds'], timed_out=r['timed_out'])
    if r['returncode'] != 0 or not result.exists():
        res['output_tail'] = tail(r['output'])
        raise PartFailed('the pretraining run ' + ('timed out' if r['timed_out'] else f'failed (exit {r["returncode"]})'), res)
    w = json.loads(result.read_text())
    res.update(pretraining=w['pretraining'], finetuning=w['finetuning'])
    if 'pretraining_workers' in w: res['pretraining_workers'] = w['pretraining_workers']
    bench = next((row for row in ctx['results'].get('pretrain_step', {}).get('rows', [])
                  if row['run'] == 'sdpa' and row['contender'] == 'atombert'), None)
    if bench:     # the same model and batch in the benchmark's loop (fixed batch, no data pipeline, no logging)
        res['pretraining'].update(mfu_vs_bench_matmul=w['pretraining']['flops_per_s'] / bench['matmul_flops_per_s'],
                                  bench_ms_per_step=bench['ms_per_step'],
                                  end_to_end_over_bench_step=w['pretraining']['seconds_per_step'] * 1e3 / bench['ms_per_step'])
    res['full_recipe'] = extrapolate(w['pretraining'], w['finetuning'], rec)
    return res

# ---------------------------------------------------------------- the driver

class PartFailed(Exception):
    "A part's check failed: its message, and what the part measured before that."
    def __init__(self, message, result): super().__init__(message); self.result = result


def print_table(report: dict):
    "The summary: one line per part, then the benchmark's and the pretraining's numbers."
    parts = report['parts']
    rows = []
    for name in PARTS:
        p = parts.get(name)
        if p is None: continue
        what = p.get('error', '')
        if name == 'environment' and p['status'] == 'ok':
            what = f"{p.get('gpu', 'CPU only')}, torch {p['torch']}, transformers {p['transformers']}"
        elif name == 'cuda_tests' and 'collected' in p:
            what = f"{p['passed']} passed, {p['failed']} failed, {p['errors']} errors, {p['skipped']} skipped of {p['collected']}" + \
                   (f" ({what})" if what else '')
        elif name == 'pretrain_step' and p.get('rows'):
            sp = [f"{r['atombert_speedup']:.2f}× vs {r['contender']}" for r in p['rows'] if r['atombert_speedup']]
            what = 'atombert ' + ', '.join(sp) + (f' ({what})' if what else '')
        elif name == 'pretraining' and 'pretraining' in p:
            x, f = p['pretraining'], p['full_recipe']
            what = (f"{x['tokens_per_s_real']:,.0f} real tokens/s end to end; full recipe ≈ {f['total_hours'][0]:.2f}–"
                    f"{f['total_hours'][1]:.2f} h")
        rows.append((name, p['status'], f"{p.get('seconds', 0):.0f} s", what))
    w = [max(len(r[i]) for r in rows + [('part', 'status', 'time', '')]) for i in range(3)]
    print(f"\n{'part'.ljust(w[0])}  {'status'.ljust(w[1])}  {'time'.rjust(w[2])}  result")
    print(f"{'-' * w[0]}  {'-' * w[1]}  {'-' * w[2]}  ------")
    for r in rows: print(f'{r[0].ljust(w[0])}  {r[1].ljust(w[1])}  {r[2].rjust(w[2])}  {r[3]}')
    if (ps := parts.get('pretrain_step', {})).get('rows'):
        from atombert.measure import print_table as table
        print(f"\ntraining step (bench/pretrain_step.py {' '.join(ps['args'])}):")
        table(ps['rows'], [('contender', 'contender', ''), ('run', 'run', ''), ('precision', 'precision', ''),
                           ('tokens_per_s', 'tokens/s', ',.0f'), ('ms_per_step', 'ms/step', ',.1f'), ('mfu', 'MFU', '.0%'),
                           ('peak_mb', 'peak MB', ',.0f'), ('atombert_speedup', 'atombert ×', '.2f')])
    if 'pretraining' in (pt := parts.get('pretraining', {})):
        x, y, f = pt['pretraining'], pt['finetuning'], pt['full_recipe']
        print(f"\npretraining {x['preset']}, {x['batch_size']} × {x['seq_len']}, {x['precision']}, builtin corpus: "
              f"{x['steps_logged']} steps in {x['training_s']:.0f} s, {x['seconds_per_step'] * 1e3:.1f} ms/step, "
              f"{x['tokens_per_s_real']:,.0f} real / {x['tokens_per_s_padded']:,.0f} padded tokens/s"
              + (f", peak {x['peak_gpu_mb']:,.0f} MB" if x.get('peak_gpu_mb') else '')
              + (f", MFU {x['mfu_vs_bench_matmul']:.0%} of the bench's matmul rate" if x.get('mfu_vs_bench_matmul') else ''))
        print(f"  data pipeline (reading + masking, in the training process) {x['data_ms_per_step']:.1f} ms/step"
              + (f"; the benchmark's step on a fixed batch: {x['bench_ms_per_step']:.1f} ms (end to end is "
                 f"{x['end_to_end_over_bench_step']:.2f}× that)" if x.get('bench_ms_per_step') else ''))
        if (wk := pt.get('pretraining_workers')):
            print(f"  with {wk['num_workers']} DataLoader workers (--num-workers): {wk['seconds_per_step'] * 1e3:.1f} ms/step, "
                  f"{wk['tokens_per_s_real']:,.0f} real tokens/s, {wk['speedup_over_in_process']:.2f}× the run without")
        print(f"finetuning, batch {y['batch_size']}: {y['seconds_per_step'] * 1e3:.1f} ms/step at mean padded width {y['mean_padded_width']:.1f}"
              + (f" (the first run over the same {y['first_run']['distinct_shapes']} batch shapes: {y['first_run']['seconds_per_step'] * 1e3:.1f} ms/step; "
                 f"{f.get('seconds_per_new_shape', 0):.3f} s once per new shape)" if 'first_run' in y else ''))
        print(f"full recipe (extrapolated): pretraining {f['pretraining_steps'][0]:,}–{f['pretraining_steps'][1]:,} steps = "
              f"{f['pretraining_hours'][0]:.2f}–{f['pretraining_hours'][1]:.2f} h, data preparation ≈ {f['data_preparation_hours']:.2f} h, "
              f"MNLI finetuning {f['finetuning_steps']:,} steps = {f['finetuning_hours']:.2f} h; total ≈ "
              f"{f['total_hours'][0]:.2f}–{f['total_hours'][1]:.2f} h")
    print(f"\n{'DRY RUN (CPU, smoke size): ' if report['dry_run'] else ''}"
          f"{'all parts ok' if report['ok'] else 'FAILED: ' + ', '.join(n for n, p in parts.items() if p['status'] != 'ok')} "
          f"in {report['seconds']:.0f} s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--dry-run', action='store_true', help='CPU at smoke size (CI): the same parts, CUDA hidden, the CUDA tests skipped')
    p.add_argument('--out', default='bench/results/gpu_check.json', help='the JSON report (also written to $OUT/gpu_check.json when $OUT is set)')
    p.add_argument('--work', default=None, help='scratch folder (default: a new temporary folder, removed after a run that passed)')
    p.add_argument('--parts', default=','.join(PARTS), help=f'comma-separated parts to run (default all: {",".join(PARTS)})')
    p.add_argument('--budget-s', type=float, default=470, help='seconds for the whole check; the pretraining run is shortened to fit')
    p.add_argument('--pretrain-seconds', type=float, default=180, help='training seconds of the pretraining run (GPU)')
    p.add_argument('--finetune-seconds', type=float, default=20, help='training seconds of the finetuning steps (GPU)')
    p.add_argument('--workers-seconds', type=float, default=30, help='training seconds of the pretraining run with DataLoader workers (GPU; 0: none)')
    p.add_argument('--num-workers', type=int, default=4, help='DataLoader workers of that run (GPU)')
    p.add_argument('--inject-failure', default=None, help=argparse.SUPPRESS)     # tests: this part raises at once
    args = p.parse_args(argv)
    parts = [x.strip() for x in args.parts.split(',') if x.strip()]
    if (bad := set(parts) - set(PARTS)): p.error(f'unknown parts {sorted(bad)}: choose from {", ".join(PARTS)}')
    if args.dry_run: os.environ['CUDA_VISIBLE_DEVICES'] = ''          # before torch starts CUDA
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix='atombert_gpu_check_'))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    remaining = lambda: args.budget_s - (time.time() - t0)
    # per-part time limits: what is left, less what the parts after it need at least (GPU); generous in the dry run
    # the shortest pretraining part, as part_pretraining computes it: 30 s of training, finetuning twice, the workers' run, setup
    least_pretraining = 30 + 2 * args.finetune_seconds + args.workers_seconds + (100 if args.workers_seconds else 90)
    def timeout(part, runs_left=1):
        if args.dry_run: return 420
        reserve = {'cuda_tests': 2 * 45 + least_pretraining, 'pretrain_step': least_pretraining}.get(part, 0)
        cap = {'cuda_tests': 240, 'pretrain_step': 150}.get(part, 600)
        return max(30.0, min(cap, (remaining() - reserve) / runs_left))
    report = dict(check='gpu_check', issue=15, dry_run=args.dry_run, started=time.strftime('%Y-%m-%d %H:%M:%S'),
                  argv=sys.argv[1:] if argv is None else argv, budget_s=args.budget_s, work=str(work), parts={})
    ctx = dict(work=work, remaining=remaining, timeout=timeout, results=report['parts'])
    log(f"gpu_check{' --dry-run' if args.dry_run else ''}: parts {', '.join(parts)}; scratch {work}")
    try: ctx['recipe'] = report['recipe'] = recipe()
    except Exception as e:
        ctx['recipe'] = None
        report['parts']['recipe'] = dict(status='failed', error=f'{type(e).__name__}: {e}', traceback=traceback.format_exc()[-3000:])
    funcs = dict(environment=part_environment, cuda_tests=part_cuda_tests, pretrain_step=part_pretrain_step, pretraining=part_pretraining)
    for name in parts:
        log(f'== {name} ==')
        t = time.time()
        try:
            if args.inject_failure == name: raise RuntimeError(f'injected failure in {name} (--inject-failure)')
            if ctx['recipe'] is None and name != 'environment': raise RuntimeError("the recipe (atombert.commands.run's defaults) could not be read")
            res = dict(status='ok', **funcs[name](args, ctx))
        except PartFailed as e: res = dict(status='failed', error=str(e), **e.result)
        except Exception as e:
            res = dict(status='failed', error=f'{type(e).__name__}: {e}', traceback=traceback.format_exc()[-3000:])
        res['seconds'] = round(time.time() - t, 1)
        report['parts'][name] = res
        log(f"{name}: {res['status']}" + (f" ({res['error']})" if res['status'] != 'ok' else '') + f" in {res['seconds']:.0f} s")
        write(report, args)                  # after every part: a check cut short still leaves its JSON
    report['seconds'] = round(time.time() - t0, 1)
    report['ok'] = all(p['status'] == 'ok' for p in report['parts'].values())
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): print_table(report)
    for line in buf.getvalue().rstrip('\n').split('\n'): log(line, raw=True)       # printed, and in the log file
    paths = write(report, args, final=True)
    print('wrote ' + ', '.join(map(str, paths)))
    if report['ok'] and not args.work: shutil.rmtree(work, ignore_errors=True)     # a failed run keeps its scratch to look at
    return 0 if report['ok'] else 1


def write(report: dict, args, final=False) -> list:
    report.setdefault('ok', False)
    paths = [Path(args.out) if Path(args.out).is_absolute() else ROOT/args.out]
    if os.environ.get('OUT'): paths.append(Path(os.environ['OUT'])/'gpu_check.json')
    from atombert.files import atomic_write
    for path in paths: atomic_write(path, json.dumps(report, indent=1, default=str) + '\n')
    if os.environ.get('OUT'): atomic_write(Path(os.environ['OUT'])/'gpu_check.log', '\n'.join(log.lines) + '\n')
    return paths


if __name__ == '__main__': sys.exit(main())

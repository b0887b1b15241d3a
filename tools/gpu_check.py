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
   extrapolated (WikiText-103 × 2 epochs, then MNLI × 2 epochs), with every assumption in the JSON.

The JSON goes to `--out` (default bench/results/gpu_check.json) and, when $OUT is set (the GPU machine's folder whose
files come back), to $OUT/gpu_check.json with the whole log beside it ($OUT/gpu_check.log).
"""
import argparse, contextlib, io, json, math, os, platform, random, shutil, signal, subprocess, sys, tempfile, threading, time, traceback
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))

PARTS = ('environment', 'cuda_tests', 'pretrain_step', 'pretraining')

# What the extrapolation assumes; every number is also written into the JSON.
WIKITEXT103_TOKENS = 125e6      # WikiText-103 train: 103M words, about 125M WordPiece tokens at 30,000 entries (nbs/11_transfer)
MNLI_TRAIN_PAIRS = 392_702      # MNLI train (GLUE), the pairs that have a gold label
MNLI_DEV_PAIRS = 9_815 + 9_832  # matched + mismatched dev sets, evaluated after finetuning
MNLI_SHAPES = 2 * 128            # distinct finetuning batch shapes at most: widths up to max_length 128, full or last batch
MNLI_MEAN_PADDED_WIDTH = 42.5   # bench/finetune_epoch.py: atombert's bucketed batches of 32 on the 20k train sample (bench/README.md)

# Smoke sizes of the dry run (CPU, CI)
DRY = dict(preset='tiny', vocab_size=1000, seq_len=64, batch_size=16, pretrain_seconds=10, finetune_seconds=4, finetune_pairs=2000,
           workers_seconds=4, num_workers=2)


def recipe() -> dict:
    "The full recipe: `atombert run`'s defaults (atombert-8m, WikiText-103 × 2 epochs at 256 × 128, then MNLI × 2 epochs at 32)."
    from atombert.cli import command_parser
    d = vars(command_parser('run').parse_args([]))          # its own defaults and those of its training settings (RUN_ARGS, TrainArgs)
    return {k: d[k] for k in ('preset', 'vocab_size', 'seq_len', 'pretrain_epochs', 'batch_size', 'lr', 'token_objective',
                              'finetune_batch_size', 'finetune_epochs', 'finetune_lr', 'precision', 'corpus', 'mnli')}

# ---------------------------------------------------------------- logging and subprocesses

class Log:
    "Print with the seconds since the start, and keep everything printed (the subprocesses' output too) for the log file."
    def __init__(self): self.t0, self.lines = time.time(), []
    def __call__(self, *msg, raw=False):
        text = ' '.join(str(m) for m in msg)
        line = text if raw else f'[{time.time() - self.t0:6.1f}s] {text}'
        print(line, flush=True); self.lines.append(line)

log = Log()


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

def part_environment(args, ctx) -> dict:
    import torch, transformers, tokenizers, fastcore
    r = dict(python=platform.python_version(), platform=platform.platform(), cpus=os.cpu_count(), torch=torch.__version__,
             torch_cuda=torch.version.cuda, transformers=transformers.__version__, tokenizers=tokenizers.__version__,
             fastcore=fastcore.__version__, fastcore_from=str(Path(fastcore.__file__).parent.parent),
             installed_from_wheels=os.environ.get('GPU_CHECK_INSTALLED_WHEELS', '') or None,
             cuda_available=torch.cuda.is_available() and not args.dry_run)
    if r['cuda_available']:
        p = torch.cuda.get_device_properties(0)
        r.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gb=round(p.total_memory / 2 ** 30, 1),
                 capability=f'{p.major}.{p.minor}', multiprocessors=p.multi_processor_count,
                 bf16_native=torch.cuda.is_bf16_supported(including_emulation=False))
        if shutil.which('nvidia-smi'):
            q = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total,clocks.max.sm', '--format=csv,noheader'],
                               capture_output=True, text=True, timeout=30)
            r['nvidia_smi'] = q.stdout.strip() or q.stderr.strip()
    elif not args.dry_run:
        raise RuntimeError('no CUDA device: torch.cuda.is_available() is False (run with --dry-run for the CPU smoke run)')
    log(f"environment: Python {r['python']}, torch {r['torch']} (CUDA {r['torch_cuda']}), transformers {r['transformers']}, "
        f"fastcore {r['fastcore']}; " + (f"{r['gpu']} ({r['gpu_memory_gb']} GiB)" if r['cuda_available'] else 'CPU only'))
    return r

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

# ---------------------------------------------------------------- part 3: a timed pretraining run and finetuning steps

# the timed runs' optimizer steps: never reached in their seconds; the schedule's 10% warmup (10,000 steps) is what they train in
MAX_STEPS = 100_000


def batch_counter():
    "A `fit` callback that counts the batches it trains on: micro-batches, rows, real and padded tokens, masked tokens, shapes."
    from atombert.training import Callback
    class BatchCounter(Callback):
        def __init__(self): self.n = self.rows = self.real = self.padded = self.masked = 0; self.shapes = set()
        def after_batch(self, state, batch):
            am = batch['attention_mask']
            self.n += 1; self.rows += am.shape[0]; self.real += int(am.sum()); self.padded += am.numel(); self.shapes.add(tuple(am.shape))
            if batch['labels'].dim() == 2: self.masked += int((batch['labels'] != -100).sum())   # MLM labels (not a class per row)
    return BatchCounter()


def timed_run(seconds: float, out: Path, device: str, train) -> tuple:
    """`train(out, callbacks)` into a fresh `out`, stopped by a `StepClock` once it has trained `seconds`: its clock
    (the first and the last step's end) and its `batch_counter`."""
    import torch
    from atombert.budget import StepClock
    clock, counter = StepClock(torch.device(device), min_steps=2, seconds=seconds), batch_counter()
    shutil.rmtree(out, ignore_errors=True)
    train(out, [clock, counter])
    if clock.times[-1] - clock.times[0] < seconds: raise RuntimeError(f'{out.name} ended before its time budget')
    return dict(start=clock.times[0], stop=clock.times[-1]), counter


def rate_from_metrics(out_dir) -> dict:
    "Steps and seconds between the first and the last logged training step (the first window's warm-up left out)."
    from atombert.logs import read_metrics
    rows = [r for r in read_metrics(out_dir) if r['split'] == 'train']
    if len(rows) < 2: raise RuntimeError(f'too few logged steps in {out_dir} to time ({len(rows)} rows): raise the seconds')
    a, b = rows[0], rows[-1]
    steps, secs = b['step'] - a['step'], b['time'] - a['time']
    key = 'mlm_loss' if 'mlm_loss' in a else 'loss'
    data_ms = [r['data_ms'] for r in rows[1:]]                      # host time a step spent reading and masking its batches
    return dict(steps_logged=b['step'], window_steps=steps, window_seconds=round(secs, 3), seconds_per_step=secs / steps,
                first_loss=a.get(key), last_loss=b.get(key), data_ms_per_step=sum(data_ms) / len(data_ms))


def nli_pairs(n: int, seed: int = 0) -> list:
    "MNLI-shaped pairs (premise 8-40 words, hypothesis 4-18 words, 3 labels) cut from the builtin corpus' text: only their lengths matter."
    from atombert.corpora import load_corpus
    words = ' '.join(p for doc in load_corpus('builtin', 'train') for p in doc).split()
    rng = random.Random(seed)
    def cut(lo, hi):
        k = rng.randint(lo, hi); start = rng.randrange(len(words) - k)
        return ' '.join(words[start:start + k])
    return [dict(premise=cut(8, 40), hypothesis=cut(4, 18), label=rng.randrange(3)) for _ in range(n)]


def pretraining_worker(spec: dict) -> dict:
    "In its own process: `pretrain` as `atombert run` calls it, stopped after `spec['pretrain_seconds']` of training; then finetuning steps."
    import torch
    from atombert.corpora import load_corpus
    t_start = time.perf_counter()
    work, cuda = Path(spec['work']), spec['device'] == 'cuda'
    # Reading the builtin corpus parses Python's sources (most of what pretokenizing it takes; the library reads it once a
    # process): read it here first, apart, so that the run's timings measure tokenizing, what scales to WikiText-103,
    # whose reading is a file read
    t = time.perf_counter(); sum(1 for _ in load_corpus('builtin', 'train')); corpus_read_s = time.perf_counter() - t
    if cuda: torch.cuda.reset_peak_memory_stats()
    pre = timed_pretraining(spec, work/'pretrain', t_start)
    res = dict(spec=spec, pretraining=dict(pre, corpus_read_s=corpus_read_s,
                                           peak_gpu_mb=torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None))
    log(f"pretraining: {pre['steps_logged']} steps in {pre['training_s']:.0f} s, {pre['seconds_per_step'] * 1e3:.1f} ms/step, "
        f"{pre['tokens_per_s_real']:,.0f} real tokens/s ({pre['tokens_per_s_padded']:,.0f} padded), "
        f"loss {pre['first_loss']:.2f} → {pre['last_loss']:.2f}")
    # 1b. the same run with the batches read and masked in DataLoader workers (`--num-workers`): does the step approach the benchmark's?
    if spec.get('workers_seconds'):
        w = timed_pretraining(spec, work/'pretrain_workers', t_start, spec['workers_seconds'], spec['num_workers'])
        res['pretraining_workers'] = dict(num_workers=spec['num_workers'], training_s=w['training_s'],
                                          **{k: w[k] for k in ('steps_logged', 'window_steps', 'window_seconds', 'seconds_per_step',
                                                               'first_loss', 'last_loss', 'data_ms_per_step')},
                                          tokens_per_s_real=w['tokens_per_s_real'],
                                          speedup_over_in_process=pre['seconds_per_step'] / w['seconds_per_step'])
        log(f"pretraining with {spec['num_workers']} DataLoader workers: {w['seconds_per_step'] * 1e3:.1f} ms/step, "
            f"{pre['seconds_per_step'] / w['seconds_per_step']:.2f}× the run without")
    res['finetuning'] = timed_finetuning(spec, work, work/'pretrain')
    return res


def timed_pretraining(spec: dict, out: Path, t_start: float, seconds: float | None = None, num_workers: int = 0) -> dict:
    "`pretrain` as `atombert run` calls it, into `out`, stopped after `seconds` (default the spec's) of training: its rates."
    from atombert.config import AtomBertConfig
    from atombert.model import pretrain_step_flops
    from atombert.pretrain import pretrain
    from atombert.tokenizer import load_tokenizer
    clock, counted = timed_run(seconds or spec['pretrain_seconds'], out, spec['device'], lambda out, callbacks: pretrain(
        'builtin', str(out), spec['preset'], vocab_size=spec['vocab_size'], seq_len=spec['seq_len'], batch_size=spec['batch_size'],
        max_steps=MAX_STEPS, epochs=0, lr=spec['lr'], token_objective='mlm', eval_every=0, seed=0, progress=False,
        precision=spec['precision'], device=spec['device'], log_every=spec['log_every'], cache_dir=str(Path(spec['work'])/'cache'),
        num_workers=num_workers, callbacks=callbacks))
    run, rate = json.loads((out/'run.json').read_text()), rate_from_metrics(out)
    B, per_row = spec['batch_size'], lambda n: n / max(counted.rows, 1)
    width, real, masked = per_row(counted.padded), per_row(counted.real), per_row(counted.masked)
    config = AtomBertConfig.preset(spec['preset']).replace(vocab_size=load_tokenizer(out).get_vocab_size())
    flops = pretrain_step_flops(config, B, round(width), round(masked * B))['train_step']
    sps = rate['seconds_per_step']
    return dict(
        corpus='builtin', preset=spec['preset'], batch_size=B, seq_len=spec['seq_len'], precision=run['args']['precision'],
        vocab_size=config.vocab_size, train_tokens=run['train_tokens'], train_examples=run['train_examples'],
        corpus_tokens_per_example=run['train_tokens'] / run['train_examples'],
        setup_s=round(clock['start'] - t_start, 1), training_s=round(clock['stop'] - clock['start'], 1),
        tokenizer_training_s=run['timings']['tokenizer_s'], pretokenize_s=run['timings']['pretokenize_s'], **rate,
        steps_per_s=1 / sps, mean_padded_width=width, mean_real_tokens_per_row=real, masked_per_row=masked,
        tokens_per_s_padded=B * width / sps, tokens_per_s_real=B * real / sps, flops_per_step=flops, flops_per_s=flops / sps,
        note='tokens/s end to end: the training loop as `fit` runs it (data loading and masking in the main process, '
             'num_workers=0 as `atombert run` uses it, logging), timed between its first and last logged step')


def timed_finetuning(spec: dict, work: Path, pretrained: Path) -> dict:
    """Finetuning steps as `atombert run` runs them (batch 32, the LR finetune picks, bucketed pairs) on MNLI-shaped pairs,
    twice over the same batches: bucketed batches come in many widths, and the first step at each new shape pays once for
    it (kernel selection, cuDNN's attention plans); the same seed again sees the same batches, so the second run is the
    steady state."""
    import torch
    from atombert.finetuning import finetune
    from atombert.model import AtomBertForPreTraining
    from atombert.tokenizer import load_tokenizer
    model_dir = work/'pretrained'
    shutil.rmtree(model_dir, ignore_errors=True)
    config = AtomBertForPreTraining.from_pretrained(pretrained).config
    torch.manual_seed(0)          # a freshly initialized model of the pretrained one's shape, with its tokenizer: speed only
    AtomBertForPreTraining(config).save_pretrained(model_dir, tokenizer=load_tokenizer(pretrained))
    pairs = nli_pairs(spec['finetune_pairs'])

    def timed(name):
        fout = work/name
        clock, counted = timed_run(spec['finetune_seconds'], fout, spec['device'], lambda out, callbacks: finetune(
            model_dir, pairs, None, out, max_steps=MAX_STEPS, batch_size=spec['finetune_batch_size'], lr=spec['finetune_lr'],
            seed=0, progress=False, precision=spec['precision'], device=spec['device'], log_every=spec['log_every'], callbacks=callbacks))
        rate = rate_from_metrics(fout)
        width, rows = counted.padded / max(counted.rows, 1), counted.rows / max(counted.n, 1)
        return dict(**rate, steps_per_s=1 / rate['seconds_per_step'], mean_batch_rows=rows, mean_padded_width=width,
                    tokens_per_s_padded=rows * width / rate['seconds_per_step'],
                    tokens_per_s_real=counted.real / max(counted.n, 1) / rate['seconds_per_step'],
                    training_s=round(clock['stop'] - clock['start'], 1), batches=counted.n, distinct_shapes=len(counted.shapes))
    cold, warm = timed('finetune'), timed('finetune_again')
    log(f"finetuning: {warm['steps_logged']} steps, {warm['seconds_per_step'] * 1e3:.1f} ms/step at mean padded width "
        f"{warm['mean_padded_width']:.1f} (the first run over the same batches: {cold['steps_logged']} steps, "
        f"{cold['seconds_per_step'] * 1e3:.1f} ms/step)")
    return dict(batch_size=spec['finetune_batch_size'], pairs=len(pairs), **warm, first_run=cold,
                note="MNLI-shaped pairs cut from the builtin corpus (premise 8-40, hypothesis 4-18 words), "
                     "atombert.finetuning.finetune's bucketed batches; a freshly initialized model (speed only). "
                     "Run twice with the same seed: `first_run` meets each batch shape for the first time, the "
                     "top-level numbers are the second run's, over the same batches (a long run's steady state)")


def extrapolate(pre: dict, fin: dict, rec: dict) -> dict:
    "The full recipe's wall time from the measured rates; every assumption stated."
    B, T, epochs = rec['batch_size'], rec['seq_len'], rec['pretrain_epochs']
    steps_dense = math.ceil(epochs * WIKITEXT103_TOKENS / (B * T))
    steps_packed = math.ceil(epochs * WIKITEXT103_TOKENS / (B * pre['corpus_tokens_per_example']))
    sps = pre['seconds_per_step']
    prep_s = (pre['tokenizer_training_s'] + pre['pretokenize_s']) * WIKITEXT103_TOKENS / pre['train_tokens']
    read = (f"; the builtin corpus' documents were in memory, read beforehand in {pre['corpus_read_s']:.1f} s and not counted"
            if 'corpus_read_s' in pre else '')
    ft_steps = math.ceil(rec['finetune_epochs'] * MNLI_TRAIN_PAIRS / rec['finetune_batch_size'])
    ft_s = ft_steps * fin['seconds_per_step']
    first = fin.get('first_run')      # the one-time cost of each new batch shape, from the first run over the same batches
    per_shape_s = max(0.0, first['training_s'] - first['batches'] * fin['seconds_per_step']) / first['distinct_shapes'] if first else 0.0
    ft_s += per_shape_s * MNLI_SHAPES
    eval_s = MNLI_DEV_PAIRS / (fin['mean_batch_rows'] / fin['seconds_per_step']) / 3     # forward only: ≈ 1/3 of a training step
    h = lambda s: s / 3600
    pre_h = (h(steps_dense * sps), h(steps_packed * sps))
    total = (h(prep_s) + pre_h[0] + h(ft_s + eval_s), h(prep_s) + pre_h[1] + h(ft_s + eval_s))
    return dict(
        assumptions=dict(
            wikitext103_train_tokens=WIKITEXT103_TOKENS,
            wikitext103_note='WikiText-103 train: about 103M words, about 125M WordPiece tokens at 30,000 entries (nbs/11_transfer)',
            pretraining_steps_dense=f'{epochs} epochs × tokens / ({B} × {T}): every example carries {T} corpus tokens (the 11_transfer estimate)',
            pretraining_steps_packed=f'{epochs} epochs × tokens / ({B} × {pre["corpus_tokens_per_example"]:.1f}): corpus tokens per example '
                                     'as measured on the builtin corpus, whose documents are shorter than WikiText\'s (an upper bound)',
            seconds_per_pretraining_step='measured on the builtin corpus at the recipe\'s batch; '
                                         f'vocabulary {pre["vocab_size"]} there vs {rec["vocab_size"]} (only the MLM decoder at masked rows grows)',
            data_preparation='tokenizer training + pretokenization, scaled linearly from the builtin corpus\' '
                             f'{pre["train_tokens"]:,} tokens (rough; the download is not counted{read})',
            mnli_train_pairs=MNLI_TRAIN_PAIRS, mnli_dev_pairs=MNLI_DEV_PAIRS,
            finetuning=f'{rec["finetune_epochs"]} epochs × {MNLI_TRAIN_PAIRS:,} pairs / {rec["finetune_batch_size"]} a step, at the '
                       f'measured seconds per step (mean padded width {fin["mean_padded_width"]:.1f} here; MNLI\'s bucketed batches: '
                       f'{MNLI_MEAN_PADDED_WIDTH}); at this size a step is bound by per-step overhead more than by its tokens. The rate '
                       'is the second run\'s over the same batches; the first meeting of each batch shape is added once, '
                       f'{per_shape_s:.3f} s a shape (measured: the first run\'s extra time over its distinct shapes) × '
                       f'{MNLI_SHAPES} shapes at most',
            evaluation='both dev sets, forward only, taken as 1/3 of a training step per batch'),
        pretraining_steps=[steps_dense, steps_packed], seconds_per_pretraining_step=sps,
        pretraining_hours=[round(x, 3) for x in pre_h], data_preparation_hours=round(h(prep_s), 3),
        finetuning_steps=ft_steps, seconds_per_finetuning_step=fin['seconds_per_step'], seconds_per_new_shape=per_shape_s,
        finetuning_hours=round(h(ft_s), 3),
        evaluation_hours=round(h(eval_s), 4), total_hours=[round(x, 3) for x in total])


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
    r = run_cmd([sys.executable, __file__, '--worker', json.dumps(spec), '--worker-out', result], timeout, child_env(args), 'pretraining')
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
    least_pretraining = 30 + args.finetune_seconds + 90          # the shortest pretraining part (see part_pretraining)
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


if __name__ == '__main__':
    argv = sys.argv[1:]
    if argv[:1] == ['--worker']:                      # internal: the pretraining part's own process
        spec, out = json.loads(argv[1]), Path(argv[argv.index('--worker-out') + 1])
        out.write_text(json.dumps(pretraining_worker(spec), indent=1, default=str))
    else: sys.exit(main())

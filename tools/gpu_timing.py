"""The timed runs of the GPU check's pretraining part (tools/gpu_check.py), and what they extrapolate to; with what both
GPU jobs (gpu_check.py, gpu_pretrain.py) share: the log and the environment they ran in.

`pretraining_worker` runs in a process of its own (`python tools/gpu_timing.py SPEC_JSON OUT_JSON`, as gpu_check starts
it): `atombert.pretrain.pretrain` as `atombert run` calls it, stopped by a `StepClock` after a number of seconds of
training, then finetuning steps; `extrapolate` turns the measured rates into the full recipe's wall time, with every
assumption written beside the number.
"""
import json, math, os, platform, random, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))

# What the extrapolation assumes; every number is also written into the JSON.
WIKITEXT103_TOKENS = 125e6      # WikiText-103 train: 103M words, about 125M WordPiece tokens at 30,000 entries (nbs/11_transfer)
MNLI_TRAIN_PAIRS = 392_702      # MNLI train (GLUE), the pairs that have a gold label
MNLI_DEV_PAIRS = 9_815 + 9_832  # matched + mismatched dev sets, evaluated after finetuning
MNLI_SHAPES = 2 * 128            # distinct finetuning batch shapes at most: widths up to max_length 128, full or last batch
MNLI_MEAN_PADDED_WIDTH = 42.5   # bench/finetune_epoch.py: atombert's bucketed batches of 32 on the 20k train sample (bench/README.md)

class Log:
    "Print with the seconds since the start, and keep everything printed (the subprocesses' output too) for the log file."
    def __init__(self): self.t0, self.lines = time.time(), []
    def __call__(self, *msg, raw=False):
        text = ' '.join(str(m) for m in msg)
        line = text if raw else f'[{time.time() - self.t0:6.1f}s] {text}'
        print(line, flush=True); self.lines.append(line)

log = Log()

# ---------------------------------------------------------------- part 3: a timed pretraining run and finetuning steps

# the timed runs' optimizer steps: never reached in their seconds; the schedule's 10% warmup (10,000 steps) is what they train in
MAX_STEPS = 100_000


def environment(dry_run: bool) -> dict:
    "The software and the GPU this job runs on; without a GPU an error unless `dry_run` (the CPU smoke run)."
    import torch, transformers, tokenizers, fastcore
    r = dict(python=platform.python_version(), platform=platform.platform(), cpus=os.cpu_count(), torch=torch.__version__,
             torch_cuda=torch.version.cuda, transformers=transformers.__version__, tokenizers=tokenizers.__version__,
             fastcore=fastcore.__version__, fastcore_from=str(Path(fastcore.__file__).parent.parent),
             installed_from_wheels=os.environ.get('GPU_CHECK_INSTALLED_WHEELS', '') or None,
             cuda_available=torch.cuda.is_available() and not dry_run)
    if r['cuda_available']:
        p = torch.cuda.get_device_properties(0)
        r.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gb=round(p.total_memory / 2 ** 30, 1),
                 capability=f'{p.major}.{p.minor}', multiprocessors=p.multi_processor_count,
                 bf16_native=torch.cuda.is_bf16_supported(including_emulation=False))
        if shutil.which('nvidia-smi'):
            try:      # informational: a hung or missing driver tool must not cost the run
                q = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total,clocks.max.sm', '--format=csv,noheader'],
                                   capture_output=True, text=True, timeout=30)
                r['nvidia_smi'] = q.stdout.strip() or q.stderr.strip()
            except (OSError, subprocess.SubprocessError) as e: r['nvidia_smi'] = f'{type(e).__name__}: {e}'
    elif not dry_run:
        raise RuntimeError('no CUDA device: torch.cuda.is_available() is False (run with --dry-run for the CPU smoke run)')
    log(f"environment: Python {r['python']}, torch {r['torch']} (CUDA {r['torch_cuda']}), transformers {r['transformers']}, "
        f"fastcore {r['fastcore']}; " + (f"{r['gpu']} ({r['gpu_memory_gb']} GiB)" if r['cuda_available'] else 'CPU only'))
    return r

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


if __name__ == '__main__':                            # the pretraining part's own process
    spec, out = json.loads(sys.argv[1]), Path(sys.argv[2])
    out.write_text(json.dumps(pretraining_worker(spec), indent=1, default=str))

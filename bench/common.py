"""Shared pieces of the benchmark scripts: their options, the machine, the transformers twin, peak memory measured
in a fresh process, the studies' pretraining text, JSON output (and plots, through the library's `atombert.files.save_figure`). The measuring itself (interleaved timing, matmul
probes, counted FLOPs, the fixed batch, tables) is the library's `atombert.measure` (09_measure), re-exported here;
the FLOP formula is `atombert.model`'s.

The benchmarks are scripts, not library code: nothing in `atombert/` imports this file.
"""
import argparse, json, os, platform, re, statistics, subprocess, sys
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))   # run from a checkout without `pip install -e .`
from atombert.files import save_figure   # noqa: E402  (00_files: plots written whole or not at all)
from atombert.measure import (cpu_model, sync, interleaved, paired_ratio, matmul_fn, with_matmul, matmul_reference,  # noqa: E402
                              normalized_ratio, matmul_rate, counted_flops, pretraining_batch, print_table)   # 09_measure
SHARED_DATA = Path(os.environ.get('ATOMBERT_SHARED_DATA', ROOT.parent/'shared'/'data'))   # real MNLI and WikiText, read-only
WIKITEXT_RAW = ('wikitext/wikitext-2-raw/wiki.valid.raw', 'wikitext/wikitext-2-raw/wiki.test.raw')

def shared_path(relative:str) -> Path:
    "A file or folder of the shared data folder; one clear error when it is missing."
    p = SHARED_DATA/relative
    if not p.exists(): raise SystemExit(f'error: {p} not found (the shared data folder: set ATOMBERT_SHARED_DATA, or pass the path)')
    return p

def wikitext_tokenizer(vocab_size:int, max_length:int=128):
    """A WordPiece tokenizer trained on the WikiText-2 raw validation and test text (general English, not the MNLI
    text it will encode), in about 2 s. With 30k requested entries (24.6k learned) the 20k MNLI train sample's pairs
    are 39 tokens long at the median, 16 and 76 at the 5th and 95th percentiles."""
    from atombert.tokenizer import train_tokenizer
    return train_tokenizer([str(shared_path(f)) for f in WIKITEXT_RAW], vocab_size=vocab_size, max_length=max_length,
                           show_progress=False)

# ---------------------------------------------------------------- command line and machine

def script_parser(doc:str, out:str, small:str, cpu_only:bool=True, threads_help:str='torch threads') -> argparse.ArgumentParser:
    """A script's parser with the options every benchmark and study has: --out (the JSON; plots go beside it),
    --threads, --device (cpu alone for a CPU study) and --small (the CI smoke size: `small` says what it is)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument('--out', default=out, help='JSON results (plots beside it)')
    p.add_argument('--threads', type=int, default=os.cpu_count(), help=f'{threads_help} (default: all cores)')
    if cpu_only: p.add_argument('--device', choices=('cpu',), default='cpu', help='(a CPU study)')
    else: p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--small', action='store_true', help=f'CI smoke size: {small}')
    return p

def set_threads(args):
    "Check --threads and give torch that many."
    if args.threads < 1: raise SystemExit(f'error: --threads must be >= 1, got {args.threads}')
    torch.set_num_threads(args.threads)
    return args

def base_parser(description:str, out:str, repeats:int, warmup:int) -> argparse.ArgumentParser:
    "The options every timing benchmark shares."
    p = script_parser(description, out, 'preset tiny, batch 4, seq 32, 2 repeats', cpu_only=False)
    p.add_argument('--preset', default='atombert-8m', help='atombert config preset (default atombert-8m)')
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--seq-len', type=int, default=128)
    p.add_argument('--repeats', type=int, default=repeats, help='timed rounds; each round runs every contender once')
    p.add_argument('--warmup', type=int, default=warmup, help='untimed rounds first')
    p.add_argument('--precision', choices=('fp32', 'bf16'), default='fp32', help='bf16 = autocast for every contender')
    p.add_argument('--compile', action='store_true', help='torch.compile every (float) model')
    p.add_argument('--no-memory', action='store_true', help='skip the peak-memory subprocesses')
    p.add_argument('--memory-of', default=None, help=argparse.SUPPRESS)   # internal: the peak-memory worker
    return p

def finish_args(args):
    "Apply --small, check the values, set the threads and seeds."
    if args.small: args.preset, args.batch_size, args.seq_len, args.repeats, args.warmup = 'tiny', 4, 32, 2, 1
    for name in ('batch_size', 'seq_len', 'repeats', 'threads'):
        if getattr(args, name) <= 0: raise SystemExit(f'error: --{name.replace("_", "-")} must be > 0, got {getattr(args, name)}')
    if args.warmup < 0: raise SystemExit('error: --warmup must be >= 0')
    from atombert.config import AtomBertConfig
    try: max_pos = AtomBertConfig.preset(args.preset).max_position_embeddings
    except ValueError as e: raise SystemExit(f'error: --preset: {e}')
    if args.seq_len > max_pos: raise SystemExit(f"error: --seq-len {args.seq_len} exceeds the preset's max_position_embeddings={max_pos}")
    if args.device.startswith('cuda') and not torch.cuda.is_available(): raise SystemExit('error: --device cuda but no CUDA device')
    if getattr(args, 'compile', False) and not args.device.startswith('cuda') and 'OMP_WAIT_POLICY' not in os.environ \
            and not getattr(args, 'memory_of', None):
        # inductor's C++ kernels bring their own OpenMP pool; both pools spin-wait and starve each other on few cores
        # (measured here: a compiled tiny step took 1.6 s instead of 4 ms)
        print('warning: --compile on CPU without OMP_WAIT_POLICY=PASSIVE in the environment: compiled steps can be '
              'hundreds of times slower from OpenMP spin-waiting', file=sys.stderr)
    set_threads(args)
    torch.manual_seed(0)
    return args

def machine_info(device) -> dict:
    import transformers
    info = dict(cpu=cpu_model(), logical_cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
                torch=torch.__version__, transformers=transformers.__version__, python=platform.python_version(),
                platform=platform.platform(), device=str(device),
                load_average_at_start=[round(x, 2) for x in os.getloadavg()] if hasattr(os, 'getloadavg') else None)
    if str(device).startswith('cuda'): info['gpu'] = torch.cuda.get_device_name(device)
    return info

def autocast(precision:str, device):
    "The library's autocast (`atombert.devices.autocast_for`): what `fit` runs under `precision`."
    from atombert.devices import autocast_for
    return autocast_for(precision, torch.device(device))

# ---------------------------------------------------------------- the transformers twin

def albert_twin(atom_model, cls_name:str, attn:str='sdpa'):
    "transformers' `cls_name` (AlbertForPreTraining / AlbertModel) with the same config and weights: the library's `atombert.hf.to_hf` (`attn` attention; SDPA is transformers' default)."
    from atombert.hf import to_hf
    hf = to_hf(atom_model, attn_implementation=attn)
    if type(hf).__name__ != cls_name: raise ValueError(f'{type(atom_model).__name__} converts to {type(hf).__name__}, not {cls_name}')
    return hf.train(atom_model.training)

# ---------------------------------------------------------------- timing

def timed_beside_matmul(fns:dict, args, dtype=torch.float32, warmup:int|None=None, log=print):
    "Interleaved seconds per call of `fns`, each call beside a matmul probe: (times, matmul rate beside each call, median rate)."
    mm, mm_flops = matmul_fn(args.matmul_size, args.device, dtype)
    times = interleaved(with_matmul(fns, mm), args.repeats, args.warmup if warmup is None else warmup, args.device, log)
    ref = matmul_reference(times, list(fns), mm_flops)
    return times, ref, statistics.median([x for v in ref.values() for x in v])

# ---------------------------------------------------------------- FLOPs

from atombert.model import pretrain_step_flops, encoder_forward_flops   # the library's formula (03_model)

# ---------------------------------------------------------------- peak memory in a fresh process

def _proc_status_kb(field:str):
    try: return int(re.search(rf'^{field}:\s*(\d+) kB', Path('/proc/self/status').read_text(), re.M).group(1))
    except (OSError, AttributeError): return None

def rss_mb() -> float:
    kb = _proc_status_kb('VmRSS')
    if kb is not None: return kb / 1024
    import resource   # no /proc (macOS): the peak is the best we have, in bytes there
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20

def reset_peak_rss() -> bool:
    "Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux ≥ 4.0); False where that is not possible."
    try: Path('/proc/self/clear_refs').write_text('5'); return True
    except OSError: return False

def peak_rss_mb() -> float:
    kb = _proc_status_kb('VmHWM')
    if kb is not None: return kb / 1024
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform.startswith('linux') else r / 2 ** 20

def same_inputs(folder, inputs:dict):
    """Refuse to reuse `folder`, a piece of a resumable study (a pretraining run, a model, a finetuning), when its
    `inputs.json` says it was made from other `inputs`: a study resumed or rerun with other settings in the same --work
    must not mix their results. A folder without the file (made before it was kept) is taken as it is."""
    f, now = Path(folder)/'inputs.json', json.loads(json.dumps(inputs, default=str))
    if f.is_file() and (old := json.loads(f.read_text())) != now:
        changed = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
        raise SystemExit(f'error: {folder} was made with other settings ({", ".join(changed)}): give another --work, or remove it')

def record_inputs(folder, inputs:dict):
    "Write what `folder` was made from (`same_inputs` checks it when the study comes back to it)."
    from atombert.files import atomic_write
    atomic_write(Path(folder)/'inputs.json', json.dumps(inputs, indent=1, default=str) + '\n')

# every contender's code, loaded before the baseline: transformers imports its ALBERT module on first use (≈ 140 MB
# of resident code), which would otherwise be counted as that model's memory
CONTENDER_MODULES = ('atombert.model', 'transformers.models.albert.modeling_albert', 'torch.ao.quantization')

def measure_memory(build, run, device, calls:int=2, modules=CONTENDER_MODULES) -> dict:
    """In this (fresh) process: memory of the model `build()` returns, and the peak while `run(model)` is called
    `calls` times, both relative to the process before `build` with `modules` (every contender's code) imported (MB).
    CPU: resident set; CUDA: allocator peak."""
    import gc, importlib
    for m in modules: importlib.import_module(m)
    cuda = str(device).startswith('cuda')
    gc.collect(); base = rss_mb()
    if cuda: sync(device); cuda_base = torch.cuda.memory_allocated(device)   # the device measured, not the current one
    state = build(); gc.collect()
    ready = rss_mb()
    exact = reset_peak_rss()
    if cuda: sync(device); torch.cuda.reset_peak_memory_stats(device); cuda_ready = torch.cuda.memory_allocated(device)
    for _ in range(calls): run(state)
    sync(device)
    r = dict(model_mb=ready - base, peak_mb=peak_rss_mb() - base, peak_is_exact=exact)
    if cuda: r.update(model_mb=(cuda_ready - cuda_base) / 2 ** 20, peak_mb=(torch.cuda.max_memory_allocated(device) - cuda_base) / 2 ** 20,
                      host_peak_rss_mb=r['peak_mb'])
    return r

def memory_in_subprocess(script:str, argv:list, name:str) -> dict:
    "Run `script` again with `--memory-of name` in a fresh process and return the JSON it prints last."
    cmd = [sys.executable, str(script), *argv, '--memory-of', name, '--no-memory']
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f'memory worker for {name} failed:\n{r.stderr[-3000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])

def forwarded_argv(args) -> list:
    "The command-line options that rebuild the same benchmark in a worker process."
    return ['--preset', args.preset, '--batch-size', str(args.batch_size), '--seq-len', str(args.seq_len),
            '--threads', str(args.threads), '--device', args.device, '--precision', args.precision] + (['--compile'] if args.compile else [])

# ---------------------------------------------------------------- output

def finetune_defaults(*names:str, task:str='mnli') -> dict:
    "`finetune`'s defaults for `names`, as it runs them on `task` (its `epochs=None` means the task's own epochs)."
    import inspect
    from atombert.finetuning import finetune
    from atombert.glue import glue_task
    defaults = {k: v.default for k, v in inspect.signature(finetune).parameters.items() if k in names}
    if defaults.get('epochs', 0) is None: defaults['epochs'] = glue_task(task).epochs
    return defaults

def first(data, n:int|None):
    "The first `n` rows of a dataset (all of them when `n` is 0 or None, or more than it holds)."
    return data.select(range(min(n, len(data)))) if n else data

def write_json(path, obj) -> Path:
    path = Path(path)
    if not path.is_absolute(): path = Path.cwd() / path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(obj, indent=2) + '\n'); os.replace(tmp, path)
    return path

median = statistics.median

# ---------------------------------------------------------------- the pretraining text of the studies

MNLI_TRAIN_SAMPLE = 'mnli/train_sample_20k_ptbtok.tsv'

def study_corpus(workdir, texts_per_document:int=16, layout:str='texts') -> tuple[Path, Path]:
    """(pretraining folder, held-out file) of the pretraining studies: WikiText-2 raw test plus every distinct premise
    and hypothesis of the 20k MNLI train sample; held out: WikiText-2 raw validation. The MNLI text is the finetuning
    set's own text, without labels (task-adaptive pretraining); no dev text is in it.

    `layout='texts'`: each premise and each hypothesis a line of its own, unpaired. `layout='pairs'`: each line is a
    premise followed by its hypothesis, so that MLM fills a hypothesis word from its premise, as MNLI's classifier
    must relate the two. (SOP splits a line into sentences: where its two segments meet between a premise and its
    hypothesis, the longer-first shortcut below is open again; held-out SOP is measured on WikiText only.)

    The MNLI texts are written `texts_per_document` to a document (a line each, shuffled within their genre), not one
    to a document: a one-sentence document is split *inside* its sentence for SOP, where the order shows in the
    punctuation (a shortcut: 85% training SOP accuracy, 50% held out), and it makes a short, mostly padded example.
    Premise and hypothesis of a pair are never neighbours by design (the order of a pair would teach SOP that the
    longer segment comes first)."""
    import random
    from atombert.mnli import load_mnli
    folder = Path(workdir)/'corpus'
    if layout not in ('texts', 'pairs'): raise ValueError(f"layout={layout!r}: use 'texts' or 'pairs'")
    name = f'mnli_train_sample_{"text" if layout == "texts" else "pairs"}_{texts_per_document}.txt'
    if not (folder/name).exists():
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob('mnli_train_sample_*.txt'): old.unlink()
        train = load_mnli(str(shared_path(MNLI_TRAIN_SAMPLE)), 'train', verbose=False)
        by_genre = {}
        for p, h, g in zip(train['premise'], train['hypothesis'], train['genre']):
            for t in ((p.strip(), h.strip()) if layout == 'texts' else (f'{p.strip()} {h.strip()}',)):
                if t.strip(): by_genre.setdefault(g, {})[t] = None    # distinct texts, in order
        rng, docs = random.Random(0), []
        for g in sorted(by_genre):
            texts = list(by_genre[g]); rng.shuffle(texts)
            docs += ['\n'.join(texts[i:i + texts_per_document]) for i in range(0, len(texts), texts_per_document)]
        (folder/'wiki.test.raw').write_bytes(shared_path(WIKITEXT_RAW[1]).read_bytes())
        tmp = folder/(name + '.tmp')
        tmp.write_text('\n\n'.join(docs) + '\n'); os.replace(tmp, folder/name)
    return folder, shared_path(WIKITEXT_RAW[0])


def seconds_per_step(corpus, probe_dir, probe_steps:int=30, **pretrain_kwargs) -> float:
    """Seconds per optimizer step of `atombert.pretrain.pretrain(corpus, **pretrain_kwargs)`, from a `probe_steps` run in
    `probe_dir` (after its first log row: warm caches). Budgets in minutes become steps with it, so a rerun trains the
    same steps whatever else the machine is doing."""
    import shutil
    from atombert.pretrain import pretrain
    from atombert.logs import read_metrics
    shutil.rmtree(probe_dir, ignore_errors=True)
    log_every = max(1, probe_steps // 3)
    pretrain(str(corpus), str(probe_dir), max_steps=probe_steps, log_every=log_every, **pretrain_kwargs)
    t = [r['time'] for r in read_metrics(probe_dir) if r['split'] == 'train']
    return (t[-1] - t[0]) / (probe_steps - log_every)

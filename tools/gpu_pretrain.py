"""The seed's job on one GPU (issue 27): atombert-8m pretrained on Wikipedia and finetuned on MNLI in one run of at most
9 minutes; the scores, the speeds, a plot and the pretrained weights come back.

    python tools/gpu_pretrain.py prepare               # here, on the CPU: gpu_data/ (what travels; ≤ 64 MiB with the tree)
    bash tools/gpu_pretrain.sh --data gpu_data         # on the GPU machine, carrying .whl and gpu_data
    bash tools/gpu_pretrain.sh --dry-run               # the same job on the CPU at smoke size (CI: tests/test_gpu_pretrain.py)

`prepare` copies the first --shards Wikipedia shards (xz, read as they are), trains the 30,000-entry WordPiece tokenizer
on them (here, not in device time; the tokenizers version there could train another one), and writes
the MNLI pairs `bench/wiki_transfer.py` uses (the 29,946 train pairs in its order, the full dev sets) and WikiText raw
valid as xz JSON lines and text, with a manifest of checksums.

More text than one call carries (3 shards fill the 64 MiB: 37M tokens, which 4.5 minutes read about 6 times at the
H200 check's 38.2 ms a step) takes two calls to a machine kept warm: a device call keeps the ignored folders an earlier call
carried unless it carries them again. Run the one-call job first: the second call must find the machine warm, it may
land on another kind of GPU, and one 6-shard run has no 3-shard run beside it to say whether the text paid.

    python tools/gpu_pretrain.py prepare --data gpu_more --first-shard 3 --shards-only     # shards 3-5 and their manifest
    device run(command="ls gpu_more/shards", carry=["gpu_more"])                          # call 1: the shards stay there
    device run(command="bash tools/gpu_pretrain.sh --data gpu_data --more-shards gpu_more", carry=[".whl", "gpu_data"])

The second call must come while the machine is still warm (it goes back after about 30 s idle). If it went back, the
folder is not there, and the job pretrains on the shards it carried and says so: the extra text never costs the run.

Back here, `adopt` makes what came back into what the repository keeps: the JSON and the plot as
bench/studies/NAME.{json,png}, and the pretrained model with the tokenizer that travelled (checked by its fingerprint)
and a model card (README.md, the hub's convention) of what was measured, loaded back before it replaces anything:

    python tools/gpu_pretrain.py adopt --from <files_at> --data gpu_data --name gpu_pretrain_h200

`run` (what the .sh calls), one phase after another, each timed:
1. pretokenize the shards with every core (`pretokenize`'s worker processes, one a core);
2. pretrain `atombert-8m` with the full recipe (`atombert run`'s batch 256 × 128, lr 1e-3, bf16 on the GPU) for a
   budget of --pretrain-minutes (a probe fixes the step count), the batches masked in DataLoader workers, held out
   on WikiText raw valid with the unigram references;
3. the model-only step: `fit`'s own step (`Loop.backward`, `Loop.optimizer_step`) on one batch already on the device, beside
   a bf16 matmul probe (its rate is the MFU's reference): the end-to-end step is measured against it;
4. finetune the pretrained model and its untrained twin (same config, tokenizer and seed) with `finetune`'s defaults on
   the 29,946 pairs, and score both on the full dev matched and mismatched sets.
The JSON, a plot and the pretrained weights, rounded to bf16 (19 MB: the repository keeps up to 20 MB) as sharded
safetensors (under 16 MiB a file, without the tokenizer: it travelled from here, and its fingerprint is in the JSON),
go to --out-dir ($OUT on the GPU machine): 6 files. Both finetunings start from bf16-rounded weights: the pretrained
model's are the ones that come back. The JSON
is written after every phase and the weights as soon as pretraining ends, so a run cut short still brings back what it
measured, and the plot is redrawn after every phase. Time is counted from the moment tools/gpu_pretrain.sh started
(pip and imports included: the device's 10-minute limit counts them). Pretraining gets --pretrain-minutes, less if
pretokenizing left too little for both finetunings (FINETUNE_RESERVE_S) before --deadline-minutes, and a hard stop
a little after its budget. Finetuning stops at --deadline-minutes (the model is still scored, marked cut short, with its
steps), and the untrained twin is skipped if its finetuning would end after it: pretraining that ran long never costs
the main score. A pretraining whose DataLoader workers fail is run again without workers in the time left, and the
model-only step (a diagnostic) never stops the phases after it.
"""
import argparse, json, lzma, os, shutil, sys, time, traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT/'bench', ROOT/'tools'):
    if str(p) not in sys.path: sys.path.insert(0, str(p))
from gpu_timing import environment, log  # noqa: E402

SEED_MNLI = 66.33                 # the seed's MNLI: 8M-core AtomBERT, WikiText-103 × 2 epochs, then all of MNLI
CARRY_LIMIT = 64 * 2 ** 20        # what travels to the GPU machine: the working tree, the wheels and the data
SHARD_LIMIT = '15MB'              # each file that comes back is at most 16 MiB
REPO_LIMIT = 20_000_000           # the most a model directory kept in the repository may hold (issue 27: 20 MB)
# both MNLI finetunings, their evaluation and the files after them on an H200: 2,808 steps each (3 epochs of 29,946
# pairs at 32) at ~16 ms (gpu_check_h200), 19,647 dev pairs each, new shapes' first calls (75-100 s and ~55 s, the
# review's estimate), and a margin: what pretraining leaves them when the start or pretokenizing ran long
FINETUNE_RESERVE_S = 210
PRETRAIN_GRACE_S = 20             # pretraining's hard stop, after its budget: a probe that misjudged the step never costs finetuning
# the full recipe's settings (`atombert run`), and the dry run's smoke sizes
FULL = dict(preset='atombert-8m', vocab_size=30_000, seq_len=128, batch_size=256, lr=1e-3, eval_every=500, log_every=50,
            num_workers=4, matmul_size=8192, shard_limit=SHARD_LIMIT)
DRY = dict(preset='tiny', vocab_size=1000, seq_len=64, batch_size=16, lr=1e-3, eval_every=10, log_every=1, num_workers=2,
           matmul_size=256, shard_limit='100KB')          # the tiny model's 160 KB (bf16) in two shards: the index is exercised
# log_every=1: a loaded machine's probe can leave the 15-s budget 2 steps, and the end-to-end rate needs two logged windows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='command', required=True)
    prep = sub.add_parser('prepare', help='on the CPU: the data folder that travels')
    prep.add_argument('--data', default='gpu_data', help='folder to write (git-ignored)')
    prep.add_argument('--shards', type=int, default=3, help='Wikipedia shards to carry (3 fit in 64 MiB with the tree)')
    prep.add_argument('--first-shard', type=int, default=0, help='the first shard to take (in name order)')
    prep.add_argument('--shards-only', action='store_true', help='only the shards and their manifest: a --more-shards folder')
    prep.add_argument('--small', action='store_true', help='two small shards of WikiText-2 test, 300 train / 200 dev pairs')
    keep = sub.add_parser('adopt', help='here, after the GPU run: the JSON, plot and model (with tokenizer and card) the repository keeps')
    keep.add_argument('--from', dest='source', required=True, help='the folder the device call brought back (its files_at)')
    keep.add_argument('--data', default='gpu_data', help='the folder that travelled: its tokenizer goes beside the weights')
    keep.add_argument('--name', default='gpu_pretrain_h200', help='the study\'s name: --to/NAME.json and NAME.png')
    keep.add_argument('--to', default='bench/studies', help='where the JSON and the plot go')
    keep.add_argument('--model-dir', default='models/atombert-8m-wikipedia', help='where the model goes (replaced if it exists)')
    run = sub.add_parser('run', help='the job (tools/gpu_pretrain.sh runs it)')
    run.add_argument('--data', default=None, help='the folder `prepare` wrote (default with --dry-run: a small one, made now)')
    run.add_argument('--more-shards', default=None, help='a `prepare --shards-only` folder an earlier call left on this machine '
                     '(pretrained on beside --data\'s shards; if absent or changed, the job goes on without it)')
    run.add_argument('--out-dir', default=os.environ.get('OUT') or 'bench/results/gpu_pretrain', help='JSON, plot and weights')
    run.add_argument('--work', default=None, help='scratch folder (default: a temporary one)')
    run.add_argument('--pretrain-minutes', type=float, default=4.5, help='pretraining budget (the probe included)')
    run.add_argument('--num-workers', type=int, default=None, help='DataLoader workers that read and mask the batches')
    run.add_argument('--deadline-minutes', type=float, default=9.0, help='finetuning stops by then (still scored, marked cut short); '
                     'the untrained twin is not started if it would end later')
    run.add_argument('--dry-run', action='store_true', help='CPU, smoke size: preset tiny, seconds of pretraining')
    args = p.parse_args(argv)
    if args.command == 'prepare' and args.shards < 1: p.error('--shards must be >= 1')
    if args.command == 'prepare' and args.first_shard < 0: p.error('--first-shard must be >= 0')
    if args.command == 'run':
        if not args.pretrain_minutes > 0: p.error('--pretrain-minutes must be > 0')
        if not args.dry_run and not args.data: p.error('--data is needed (the folder `prepare` wrote), or --dry-run')
        if args.dry_run: args.pretrain_minutes = min(args.pretrain_minutes, 0.25)
    return args

# ---------------------------------------------------------------- prepare (CPU)

def fail(message: str):
    "One line on stderr and exit status 2, as argparse and tools/gpu_env.sh end a run that cannot start."
    print(f'gpu_pretrain: error: {message}', file=sys.stderr); raise SystemExit(2)



def write_pairs(path: Path, data) -> int:
    "MNLI pairs as xz JSON lines (premise, hypothesis, label): the GPU machine has no `datasets`."
    rows = [dict(premise=r['premise'], hypothesis=r['hypothesis'], label=int(r['label'])) for r in data]
    path.write_bytes(lzma.compress(''.join(json.dumps(r) + '\n' for r in rows).encode(), preset=9))
    return len(rows)


def read_pairs(path: Path) -> list:
    return [json.loads(line) for line in lzma.decompress(path.read_bytes()).decode().splitlines() if line]


def carried_bytes(data: Path) -> dict:
    "What a device call carries: the working tree git knows of (tracked and untracked, not ignored), .whl/ and `data`."
    import subprocess
    files = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split('\0')
    tree = sum((ROOT/f).stat().st_size for f in files if f and (ROOT/f).is_file())
    folder = lambda d: sum(f.stat().st_size for f in Path(d).rglob('*') if f.is_file()) if Path(d).is_dir() else 0
    sizes = dict(tree=tree, wheels=folder(ROOT/'.whl'), data=folder(data))
    return sizes | dict(total=sum(sizes.values()), limit=CARRY_LIMIT)


def prepare(args):
    import common as C, wiki_transfer as W
    from atombert.corpora import load_corpus
    from atombert.tokenizer import save_tokenizer, tokenizer_fingerprint, train_tokenizer
    data = Path(args.data); shutil.rmtree(data, ignore_errors=True); (data/'shards').mkdir(parents=True)
    source = W.small_shards(data/'source') if args.small else C.shared_path('wikipedia')
    shards = sorted(source.glob('*.xz'))[args.first_shard:args.first_shard + args.shards]
    if not shards: fail(f'{source} has no shard from number {args.first_shard} on')
    for f in shards: shutil.copyfile(f, data/'shards'/f.name)
    shutil.rmtree(data/'source', ignore_errors=True)
    if args.shards_only: return write_manifest(data, dict(shards=[f.name for f in shards]))
    vocab = DRY['vocab_size'] if args.small else FULL['vocab_size']
    log(f'training a {vocab:,}-entry WordPiece tokenizer on {len(shards)} shard(s) ...')
    t = time.perf_counter()
    tok = train_tokenizer(load_corpus(str(data/'shards')).texts(), vocab_size=vocab, kind='wordpiece', show_progress=False)
    save_tokenizer(tok, data/'tokenizer'); tokenizer_s = time.perf_counter() - t
    (data/'held_out.raw.xz').write_bytes(lzma.compress(C.shared_path(W.HELD_OUT).read_bytes(), preset=9))
    train, dev = W.mnli_data(argparse.Namespace(small=args.small))
    counts = dict(train=write_pairs(data/'mnli_train.jsonl.xz', train),
                  **{name: write_pairs(data/f'mnli_dev_{name}.jsonl.xz', d) for name, d in dev.items()})
    return write_manifest(data, dict(shards=[f.name for f in shards], held_out=W.HELD_OUT,
                                     mnli=dict(train_files=[C.MNLI_TRAIN_SAMPLE, W.MNLI_EXTRA], **counts),
                                     tokenizer=dict(vocab_size=tok.get_vocab_size(), fingerprint=tokenizer_fingerprint(tok), training_s=tokenizer_s)))


def write_manifest(data: Path, manifest: dict) -> dict:
    "`manifest` with every file's checksum, into `data`; fails if a device call carrying `data` would pass the 64 MiB."
    from atombert.files import sha256_file
    files = sorted(f for f in data.rglob('*') if f.is_file())
    manifest |= dict(files={str(f.relative_to(data)): dict(bytes=f.stat().st_size, sha256=sha256_file(f)) for f in files})
    (data/'manifest.json').write_text(json.dumps(manifest, indent=1))
    sizes = carried_bytes(data)
    log(f"{data}: {len(manifest['shards'])} shard(s)" + (f", tokenizer {manifest['tokenizer']['fingerprint']}" if 'tokenizer' in manifest else '')
        + f"; a device call carries {sizes['total'] / 2**20:.1f} MiB (tree {sizes['tree'] / 2**20:.1f}, "
        f"wheels {sizes['wheels'] / 2**20:.1f}, data {sizes['data'] / 2**20:.1f}) of {CARRY_LIMIT / 2**20:.0f}")
    if sizes['total'] > CARRY_LIMIT: fail(f'{sizes["total"] / 2**20:.1f} MiB would travel, over the 64 MiB limit: carry fewer --shards')
    return manifest

# ---------------------------------------------------------------- adopt (here, after the run)

def adopt(args) -> Path:
    """What came back (`--from`) made into what the repository keeps: NAME.json and NAME.png in `--to`, and in `--model-dir`
    the pretrained weights with the tokenizer that travelled (its fingerprint must be the run's) and a model card. The model
    directory is built aside, loaded back and measured (at most REPO_LIMIT bytes) before it replaces anything."""
    from atombert.files import atomic_dir, atomic_write
    from atombert.model import AtomBertForPreTraining, param_breakdown
    from atombert.tokenizer import load_tokenizer, save_tokenizer, tokenizer_fingerprint
    src, data, to, model_dir = Path(args.source), Path(args.data), Path(args.to), Path(args.model_dir)
    if not (src/'gpu_pretrain.json').is_file(): fail(f'{src}/gpu_pretrain.json not found: give --from the folder the device call brought back')
    try: res = json.loads((src/'gpu_pretrain.json').read_text()); want = res['data']['tokenizer']['fingerprint']; res['settings']['preset']
    except (ValueError, KeyError, TypeError) as e: fail(f'{src}/gpu_pretrain.json is not what a gpu_pretrain run writes ({type(e).__name__}: {e})')
    weights = sorted((src/'model').iterdir()) if (src/'model').is_dir() else []
    if not (src/'model'/'config.json').is_file() or not all(f.is_file() for f in weights):
        fail(f"{src}/model is not the weights a run writes (config.json and safetensors files): {res.get('error', 'see the run log')}")
    if not (data/'tokenizer'/'tokenizer.json').is_file(): fail(f'{data}/tokenizer has no tokenizer.json: give --data the folder that travelled')
    try: tok = load_tokenizer(data/'tokenizer')
    except Exception as e: fail(f'{data}/tokenizer does not load ({type(e).__name__}: {e})')
    if (got := tokenizer_fingerprint(tok)) != want: fail(f'{data}/tokenizer is tokenizer {got}, but the run trained with {want}: give --data the folder that travelled')
    with atomic_dir(model_dir, replace=True) as tmp:         # nothing is replaced until all of it is in place and loads
        for f in weights: shutil.copyfile(f, tmp/f.name)
        save_tokenizer(tok, tmp)
        try: model = AtomBertForPreTraining.from_pretrained(tmp)        # config, shards and their checksums
        except (OSError, ValueError) as e: fail(f'{src}/model does not load: {e}')
        albert = json.loads((tmp/'config.json').read_text()).get('model_type') == 'albert'
        (tmp/'README.md').write_text(model_card(res, model.config, param_breakdown(model.config), model_dir, albert))
        if (size := sum(f.stat().st_size for f in tmp.iterdir())) > REPO_LIMIT:
            fail(f'{size:,} bytes with the tokenizer: more than the {REPO_LIMIT:,} a model in the repository may hold')
        try:                                                 # the study beside it, the plot drawn here if none came back
            to.mkdir(parents=True, exist_ok=True)
            atomic_write(to/f'{args.name}.json', (src/'gpu_pretrain.json').read_text())
            if (src/'gpu_pretrain.png').is_file(): atomic_write(to/f'{args.name}.png', (src/'gpu_pretrain.png').read_bytes())
            else: plot(res, to/f'{args.name}.png')
        except OSError as e: fail(f'cannot write the study into {to}: {e}')
    log(f"{model_dir}: {size / 1e6:.1f} MB with its tokenizer and card; {to/args.name}.json and .png")
    if (carry := carried_bytes(data))['total'] > CARRY_LIMIT:   # the model is part of the tree that every device call carries
        log(f"note: with {model_dir} in the tree, a device call carrying {data} would hold {carry['total'] / 2**20:.1f} MiB, over "
            f"{CARRY_LIMIT / 2**20:.0f}: prepare fewer --shards for the next run")
    return model_dir


def model_card(res: dict, config, params: dict, model_dir: Path, albert: bool) -> str:
    """The model directory's README.md: the hub's front matter, what the model is, how it was trained and what it scored;
    `albert`: saved in ALBERT's layout, which transformers reads."""
    pre, mnli = res.get('pretraining') or {}, res.get('mnli') or {}
    last = pre['held_out'][-1] if pre.get('held_out') else {}
    pct = lambda v: f'{100 * v:.2f}%' if isinstance(v, (int, float)) else '–'
    scored = {n: r for n, r in mnli.items() if 'matched' in r}
    text = "WikiText-2 test's small shards" if res.get('dry_run') else 'Wikipedia'      # `prepare --small`'s, or the real ones
    lines = ['---', 'library_name: transformers' if albert else 'library_name: atombert', 'license: apache-2.0', 'language: en',
             'tags: [albert, atombert, fill-mask]', *([] if res.get('dry_run') else ['datasets: [wikipedia]']), 'pipeline_tag: fill-mask', '---', '',
             f"# {res['settings']['preset']} pretrained on {text}", '']
    if res.get('dry_run'): lines += ['**A dry run on the CPU at smoke size (`--dry-run`): a check of the pipeline, not a result.**', '']
    lines += [f"An ALBERT-style encoder from atombert, pretrained by `tools/gpu_pretrain.py` (issue 27) on "
              f"{res.get('environment', {}).get('gpu') or 'the CPU'}. E={config.embedding_size} H={config.hidden_size} "
              f"depth={config.num_layers} heads={config.num_heads} FFN={config.intermediate_size} sharing={config.sharing} "
              f"norm={config.norm}; {params['core'] / 1e6:.2f}M core parameters (embeddings and encoder), {params['total'] / 1e6:.2f}M "
              f"with the heads; a {config.vocab_size:,}-entry WordPiece vocabulary. The weights are stored in bfloat16.", '',
              '## Training', '',
              f"MLM and SOP on {len(res.get('pretokenize', {}).get('shards', []))} shard(s) of {text} ({pre.get('train_tokens', 0):,} "
              f"tokens), {pre.get('steps', 0):,} steps of {pre.get('args', {}).get('batch_size', '?')} rows × {res['settings']['seq_len']} "
              f"tokens at lr {pre.get('args', {}).get('lr', '?')} in {pre.get('args', {}).get('precision', '?')}, "
              f"{res.get('pretrain_minutes_used', 0):.1f} minutes. Held out (WikiText raw valid: WikiText-103's validation text, as WikiText-2 ships it): MLM accuracy "
              f"{pct(last.get('mlm_accuracy'))}, where the most frequent token alone scores {pct(last.get('unigram_accuracy'))}.", '']
    if scored:
        lines += ['## MNLI', '', f"Finetuned with atombert's `finetune` defaults on {res['data']['mnli']['train']:,} MNLI train pairs; "
                  "the untrained twin has the same configuration, tokenizer and seed.", '',
                  '| model | dev matched | dev mismatched |', '|---|---|---|',
                  *[f"| {name}{' (cut short)' if r.get('cut_short') else ''} | {pct(r['matched'])} | {pct(r['mismatched'])} |" for name, r in scored.items()],
                  '', f"The seed project's AtomBERT (an 8M core, 2 epochs of WikiText-103, then all of MNLI) reported {SEED_MNLI}% "
                  "on MNLI, its split not recorded; issue 27 sets it beside dev matched.", '']
    lines += ['## Use', '', '```python', 'from atombert.model import AtomBertForSequenceClassification',
              f"clf = AtomBertForSequenceClassification.from_pretrained('{model_dir.as_posix()}', num_labels=3)   # then finetune", '```', '']
    if albert: lines += ["transformers reads it as ALBERT:", '', '```python', 'from transformers import AlbertForMaskedLM, AutoTokenizer',
                         f"model = AlbertForMaskedLM.from_pretrained('{model_dir.as_posix()}')",
                         f"tokenizer = AutoTokenizer.from_pretrained('{model_dir.as_posix()}')", '```', '']
    return '\n'.join(lines)

# ---------------------------------------------------------------- run (the GPU machine)

def data_problem(folder: Path) -> str | None:
    "What is wrong with `folder` as `prepare` wrote it (no manifest, or the first file whose checksum differs), else None."
    from atombert.files import sha256_file
    if not (folder/'manifest.json').is_file(): return f'{folder}/manifest.json not found: run `python tools/gpu_pretrain.py prepare` first'
    for name, f in json.loads((folder/'manifest.json').read_text())['files'].items():
        if not (folder/name).is_file() or sha256_file(folder/name) != f['sha256']: return f'{folder/name} is missing or not what `prepare` wrote'


def checked_data(folder: Path) -> dict:
    "The manifest of `folder`, every file's checksum verified (one line names the first that differs)."
    if problem := data_problem(folder): fail(problem)
    return json.loads((folder/'manifest.json').read_text())


def staged_shards(folder) -> dict:
    "What `--more-shards` adds: its manifest if `folder` holds what `prepare --shards-only` wrote, else why it adds nothing."
    if folder is None: return dict(used=False, why='no --more-shards')
    if not Path(folder).is_dir():
        return dict(used=False, why=f'{folder} is not on this machine (it went back between the calls?): the carried shards alone')
    if problem := data_problem(Path(folder)): return dict(used=False, why=f'{problem}: the carried shards alone')
    return dict(used=True, folder=str(folder)) | json.loads((Path(folder)/'manifest.json').read_text())   # checked just above


def shard_folder(data: Path, more: dict, work: Path) -> Path:
    "`data`'s shards, and `more`'s that it lacks, as one folder of links: the corpus pretokenize and pretrain read."
    if not more['used']: return data/'shards'
    folder = work/'shards'; shutil.rmtree(folder, ignore_errors=True); folder.mkdir(parents=True)
    for f in [*sorted((data/'shards').iterdir()), *sorted((Path(more['folder'])/'shards').iterdir())]:
        if not (folder/f.name).exists(): (folder/f.name).symlink_to(f.resolve())
    return folder


class Phases(dict):
    """Seconds of each phase of the job, in order: `with phases('name'): ...`; `after()` runs when each one ends (the job
    writes its JSON then: if the machine's time runs out later, what was measured still comes back)."""
    def __init__(self, after=lambda: None):
        super().__init__(); self.after = after
        try: started = float(os.environ['GPU_JOB_START'])     # tools/gpu_pretrain.sh's start: pip and imports count
        except (KeyError, ValueError): started = time.time()   # run directly (or a `date` without %N)
        self.startup_s = max(0.0, time.time() - started); self.t0 = time.perf_counter() - self.startup_s
    def elapsed(self) -> float: return time.perf_counter() - self.t0
    def __call__(self, name):
        import contextlib
        @contextlib.contextmanager
        def timed():
            log(f'== {name}'); t = time.perf_counter()
            try: yield
            finally: self[name] = round(time.perf_counter() - t, 2); log(f'   {name}: {self[name]:.1f} s'); self.after()
        return timed()


def write_result(res: dict, out: Path) -> Path:
    "The JSON, with the log so far, written whole or not at all."
    from atombert.files import atomic_write
    return atomic_write(out/'gpu_pretrain.json', json.dumps(res | dict(seconds=round(sum(res['phases'].values()), 1), log=log.lines),
                                                            indent=1, default=str))


def pretokenized(shards: Path, data: Path, cache: Path) -> dict:
    "The shards tokenized (`data`'s tokenizer) into the cache `pretrain` reads, with tokenizers' thread pool on every core."
    from atombert.data import pretokenize
    from atombert.tokenizer import load_tokenizer
    t = time.perf_counter()
    corpus = pretokenize(str(shards), load_tokenizer(data/'tokenizer'), cache, show_progress=False)
    s = time.perf_counter() - t
    return dict(shards=sorted(f.name for f in shards.iterdir()), tokens=corpus.num_tokens, documents=corpus.num_docs, sentences=corpus.meta['num_sentences'], seconds=s,
                tokens_per_s=corpus.num_tokens / s, cpus=os.cpu_count(), tokenizers_parallelism=os.environ.get('TOKENIZERS_PARALLELISM'))


def deadline(stop_at: float):
    "A `fit` callback that stops the run after the step that passes `stop_at` (`time.perf_counter()`); `.steps` is where it was."
    from atombert.training import Callback
    class Deadline(Callback):
        steps = 0
        def after_step(self, state): self.steps = state['step']; return time.perf_counter() >= stop_at
    return Deadline()


def pretrained(S: dict, shards: Path, data: Path, run: Path, cache: Path, device: str, minutes: float) -> tuple:
    """`pretrain` with the full recipe for `minutes` (stopped PRETRAIN_GRACE_S after them at the latest): (what it logged,
    one prepared batch of its own for the model-only step)."""
    from atombert.pretrain import pretrain
    from atombert.logs import read_metrics
    from atombert.training import Callback
    class FirstBatch(Callback):
        batch = None
        def after_batch(self, state, batch): self.batch = self.batch or batch
    first, stop = FirstBatch(), deadline(time.perf_counter() + minutes * 60 + PRETRAIN_GRACE_S)
    pretrain(str(shards), str(run), S['preset'], tokenizer=str(data/'tokenizer'), seq_len=S['seq_len'], batch_size=S['batch_size'],
             lr=S['lr'], budget_minutes=minutes, eval_corpus=str(data/'held_out.raw.xz'), eval_every=S['eval_every'],
             log_every=S['log_every'], num_workers=S['num_workers'], device=device, precision='auto', seed=0, cache_dir=str(cache),
             progress=False, callbacks=[first, stop])
    info, rows = json.loads((run/'run.json').read_text()), read_metrics(run)
    logged = [r for r in rows if r['split'] == 'train']
    train = logged[1:]                                             # the first window holds the start (CUDA's, the workers')
    med = lambda k: sorted(r[k] for r in train)[len(train) // 2] if train and k in train[0] else None
    steps = [b['step'] - a['step'] for a, b in zip(logged, train)]  # each window's steps: the run's rate weighs them so
    run_rate = sum(steps) / sum(n / r['tokens_per_s'] for n, r in zip(steps, train)) if train else None
    steps = max(r['step'] for r in rows)
    return dict(args={k: info['args'][k] for k in ('batch_size', 'lr', 'precision', 'num_workers', 'device')}, budget=info['budget'],
                minutes=minutes, steps=steps, cut_short=steps < info['budget']['max_steps'], epochs=max(r['epoch'] for r in rows if r['split'] == 'train') + 1, train_examples=info['train_examples'],
                train_tokens=info['train_tokens'], tokens_per_s=run_rate, tokens_per_s_median_window=med('tokens_per_s'),
                mfu=med('mfu'), data_ms=med('data_ms'),
                model_tflops=med('model_tflops'),
                held_out=[{k: r.get(k) for k in ('step', 'mlm_accuracy', 'mlm_loss', 'unigram_accuracy', 'unigram_loss', 'sop_accuracy')}
                          for r in rows if r['split'] == 'eval'],
                train_curve=[{k: r.get(k) for k in ('step', 'time', 'mlm_loss', 'mlm_accuracy', 'tokens_per_s')} for r in rows if r['split'] == 'train'],
                note='tokens/s: every position of the batches (padding included; SOP rows fill most of seq_len), over the '
                     'run but its first logged window (the start), epoch boundaries included; MFU and '
                     'data_ms: medians over those windows; evaluation and saving are never counted; '
                     'MFU against the GPU\'s published dense bf16 peak (atombert.devices.PEAK_FLOPS)'), first.batch


def model_only(run: Path, batch: dict, S: dict, device: str, repeats: int = 10) -> dict:
    """The pretraining step without its data: `fit`'s own `Loop.backward` and `Loop.optimizer_step` (forward and backward
    under the run's autocast, clipping, the AdamW step, the schedule) on one of the run's own prepared batches already on
    the device; beside a bf16 matmul probe."""
    import statistics, torch
    from atombert.devices import peak_flops, resolve_precision
    from atombert.measure import interleaved, matmul_fn, matmul_reference, with_matmul
    from atombert.model import AtomBertForPreTraining
    from atombert.pretrain import PreTrainingTask
    from atombert.training import Loop, TrainArgs, make_optimizer, make_schedule
    dev = torch.device(device)
    model = AtomBertForPreTraining.from_pretrained(run).to(dev).train()
    args = TrainArgs(lr=S['lr'], device=device, precision=resolve_precision('auto', dev, model))
    opt, task = make_optimizer(model, args), PreTrainingTask('sop')
    loop = Loop(model, model, model, task, args, opt, make_schedule(opt, args), torch.amp.GradScaler(dev.type, enabled=False), dev)
    b = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in batch.items()}
    def step(): loop.backward([b]); loop.optimizer_step()
    mm, mm_flops = matmul_fn(S['matmul_size'], device, torch.bfloat16 if args.precision == 'bf16' else torch.float32)
    times = interleaved(with_matmul({'step': step}, mm), repeats, 3, device, log=lambda s: None)
    rate = statistics.median(matmul_reference(times, ['step'], mm_flops)['step'])
    t, tokens = statistics.median(times['step']), b['input_ids'].numel()
    flops, peak = task.flops(model, b), peak_flops(dev, args.precision)
    return dict(batch=list(b['input_ids'].shape), masked=int((b['labels'] != -100).sum()), precision=args.precision, ms_per_step=t * 1e3,
                tokens_per_s=tokens / t, flops_per_step=flops, matmul_flops_per_s=rate, mfu_vs_matmul=flops / t / rate,
                mfu=peak and flops / t / peak,             # against the published peak, as the pretraining's MFU
                note='mfu_vs_matmul: against the bf16 matmul rate measured here; mfu: against the published dense peak',
                ms_all=[x * 1e3 for x in times['step']])


def finetuned(model_dir: Path, out: Path, train: list, dev: dict, device: str, stop_at: float = float('inf')) -> dict:
    """`finetune`'s defaults on the train pairs (seed 0), then accuracy on each dev set, on `device`. Finetuning stops after
    the step that passes `stop_at` (`time.perf_counter()`): a run cut short is still saved, scored and marked so."""
    import torch, warnings
    from atombert.evaluation import evaluate_mnli, load_finetuned
    from atombert.finetuning import finetune
    from atombert.trainer_state import checkpoints
    stop, t = deadline(stop_at), time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        finetune(model_dir, train, None, out, seed=0, progress=False, device=device, callbacks=[stop])
    finetune_s, t = time.perf_counter() - t, time.perf_counter()
    planned = json.loads((checkpoints(out)[-1]/'trainer_state.json').read_text())['settings']['max_steps']   # the run's length
    model, tok = load_finetuned(out)
    model.to(torch.device(device))
    acc = {name: evaluate_mnli(model, tok, d)['accuracy'] for name, d in dev.items()}
    return dict(**acc, finetune_s=finetune_s, evaluate_s=time.perf_counter() - t, steps=stop.steps, planned_steps=planned,
                cut_short=stop.steps < planned)


def untrained_twin(run: Path, out: Path) -> Path:
    "The pretrained model's architecture as initialized (its seed), rounded to bf16 as the pretrained one is, with its tokenizer."
    import torch
    from atombert.model import AtomBertForPreTraining
    from atombert.tokenizer import load_tokenizer
    config = AtomBertForPreTraining.from_pretrained(run).config
    torch.manual_seed(json.loads((run/'run.json').read_text())['args']['seed'])
    return AtomBertForPreTraining(config).to(torch.bfloat16).save_pretrained(out, tokenizer=load_tokenizer(run))


def shipped_weights(run: Path, out: Path, start: Path, shard_limit) -> dict:
    """The pretrained model rounded to bf16 (19 MB at 30,000 entries: within the repository's 20 MB, where fp32's 38 MB
    is not) as sharded safetensors in `out`, each file under 16 MiB, without the tokenizer (it travelled from here); and
    the same weights with the tokenizer in `start`, where finetuning starts: the weights that come back are the ones scored."""
    import torch
    from atombert.model import AtomBertForPreTraining
    from atombert.tokenizer import load_tokenizer
    shutil.rmtree(out, ignore_errors=True)
    model = AtomBertForPreTraining.from_pretrained(run).to(torch.bfloat16)
    model.save_pretrained(out, max_shard_size=shard_limit)
    model.save_pretrained(start, tokenizer=load_tokenizer(run))
    return {f.name: f.stat().st_size for f in sorted(out.iterdir())}


def job(args) -> dict:
    "Every phase in turn; what is done is kept in the JSON if a later phase fails."
    S = dict(DRY if args.dry_run else FULL)
    if args.num_workers is not None: S['num_workers'] = args.num_workers
    device, out = 'cpu' if args.dry_run else 'cuda', Path(args.out_dir)
    work = Path(args.work) if args.work else Path(tempfile_dir())
    phases = Phases(lambda: (write_result(res, out), drawn(res, out)))
    res = dict(job='gpu_pretrain', issue=27, dry_run=args.dry_run, argv=sys.argv[1:], settings=S, pretrain_minutes=args.pretrain_minutes,
               seed_mnli_matched=SEED_MNLI, bag_of_words=None if args.dry_run else bag_of_words(), phases=phases,
               startup_s=round(phases.startup_s, 1))
    deadline_s = args.deadline_minutes * 60
    try:
        with phases('environment'):
            res['environment'] = environment(args.dry_run)
            data = Path(args.data) if args.data else work/'data'
            if not args.data: prepare(argparse.Namespace(data=str(data), shards=2, first_shard=0, shards_only=False, small=True))
            res['data'] = args.manifest or checked_data(data)
            res['more_shards'] = more = staged_shards(args.more_shards)
            if args.more_shards: log(f"--more-shards: {', '.join(more['shards']) if more['used'] else more['why']}")
            shards = shard_folder(data, more, work)
            train, dev = read_pairs(data/'mnli_train.jsonl.xz'), {n: read_pairs(data/f'mnli_dev_{n}.jsonl.xz') for n in ('matched', 'mismatched')}
        with phases('pretokenize'): res['pretokenize'] = pretokenized(shards, data, work/'cache')
        left = lambda: (deadline_s - phases.elapsed() - FINETUNE_RESERVE_S) / 60     # what both finetunings leave pretraining
        res['pretrain_minutes_used'] = minutes = min(args.pretrain_minutes, max(1.0, left()))
        if minutes < args.pretrain_minutes: log(f'pretraining {minutes:.2f} minutes, not {args.pretrain_minutes:g}: '
                                                f'{phases.elapsed():.0f} s gone, {FINETUNE_RESERVE_S} s kept for finetuning')
        run = work/'pretrain'
        with phases('pretrain'):
            try: res['pretraining'], batch = pretrained(S, shards, data, run, work/'cache', device, minutes)
            except Exception as e:      # workers and pinned memory had never run on the GPU machine: once more without them
                if S['num_workers'] == 0: raise
                res['pretrain_retry'] = dict(error=f'{type(e).__name__}: {e}', num_workers=S['num_workers'], after_s=round(phases.elapsed(), 1))
                log(f"pretraining with {S['num_workers']} DataLoader workers failed ({res['pretrain_retry']['error']}); again without workers")
                S['num_workers'], run = 0, work/'pretrain_no_workers'
                minutes = res['pretrain_minutes_used'] = max(0.5, min(minutes, left()))
                res['pretraining'], batch = pretrained(S, shards, data, run, work/'cache', device, minutes)
        # the weights first: a later phase that fails or runs out of machine time must not cost the pretrained model
        start = work/'pretrained_bf16'       # finetuning starts from the weights that come back
        with phases('weights'): res['weights'] = dict(dir=str(out/'model'), dtype='bfloat16', files=shipped_weights(run, out/'model', start, S['shard_limit']))
        with phases('model_only_step'):     # a diagnostic: its failure is recorded, and finetuning goes on
            try:
                res['model_only_step'] = model_only(run, batch, S, device, repeats=3 if args.dry_run else 10)
                rate = res['pretraining']['tokens_per_s']       # None when the budget held too few logged windows (a loaded dry run)
                res['end_to_end_over_model_only'] = rate and rate / res['model_only_step']['tokens_per_s']
            except Exception as e:
                res['model_only_step'] = dict(error=f'{type(e).__name__}: {e}', traceback=traceback.format_exc()[-2000:])
                log(f"model-only step FAILED ({res['model_only_step']['error']}); finetuning goes on")
        res['mnli'], stop_at = {}, phases.t0 + deadline_s
        for name, model_dir in (('pretrained', start), ('untrained', untrained_twin(run, work/'untrained'))):
            if res['mnli'] and phases.elapsed() + phases['finetune_pretrained'] > deadline_s:
                res['mnli'][name] = dict(skipped=f"{phases.elapsed():.0f} s gone: another {phases['finetune_pretrained']:.0f} s would pass "
                                                 f"the {args.deadline_minutes:g}-minute deadline"); log(f"skipped {name}: {res['mnli'][name]['skipped']}")
                continue
            with phases(f'finetune_{name}'):       # a finetuning that runs past the deadline stops there and is scored
                res['mnli'][name] = finetuned(model_dir, work/f'finetuned_{name}', train, dev, device, stop_at)
            if res['mnli'][name]['cut_short']: log(f"finetune_{name} cut short at the deadline: step {res['mnli'][name]['steps']:,} "
                                                   f"of {res['mnli'][name]['planned_steps']:,}")
    except Exception as e:
        res['error'] = f'{type(e).__name__}: {e}'; res['traceback'] = traceback.format_exc()[-4000:]
        log(f'FAILED: {res["error"]}')
    res['seconds'] = round(sum(phases.values()), 1)
    return res


def drawn(res: dict, out: Path) -> Path | None:
    "The plot of what is measured so far (after every phase): a failure to draw is logged, never the job's."
    try: return plot(res, out/'gpu_pretrain.png')
    except Exception as e: log(f'plot FAILED: {type(e).__name__}: {e}')


def tempfile_dir() -> str:
    import tempfile
    return tempfile.mkdtemp(prefix='atombert_gpu_pretrain_')


def bag_of_words() -> dict | None:
    "The bag-of-words regression on the same 29,946 pairs, as the CPU study measured it (bench/studies/wiki_transfer*.json)."
    for f in ('wiki_transfer.json', 'wiki_transfer_60min.json'):
        if (ROOT/'bench/studies'/f).is_file(): return dict(json.loads((ROOT/'bench/studies'/f).read_text())['bag_of_words'], source=f'bench/studies/{f}')
    return None


def report(res: dict):
    "The lines a person reads first."
    log('')
    log("phases (s): " + ', '.join(f'{k} {v:.0f}' for k, v in res['phases'].items()) + f"; total {res['seconds']:.0f} s"
        + (f" after {res['startup_s']:.0f} s of start-up (pip, imports)" if res.get('startup_s') else ''))
    if 'pretokenize' in res:
        t = res['pretokenize']; more = res['more_shards']
        log(f"pretokenize: {t['tokens']:,} tokens of {len(t['shards'])} shard(s) at {t['tokens_per_s']:,.0f} tokens/s"
            + (f" ({len(set(t['shards']) - set(res['data']['shards']))} of them from --more-shards)" if more['used'] else ''))
    if 'pretraining' in res:
        p = res['pretraining']; last = p['held_out'][-1] if p['held_out'] else {}
        log(f"pretraining: {p['steps']:,} steps ({p['epochs']} epoch(s) of {p['train_tokens']:,} tokens), "
            + (f"{p['tokens_per_s']:,.0f} tokens/s end to end, " if p['tokens_per_s'] else "no end-to-end rate, ")
            + f"held-out MLM accuracy {100 * (last.get('mlm_accuracy') or 0):.2f}% (most frequent token {100 * (last.get('unigram_accuracy') or 0):.2f}%)")
    if 'error' in res.get('model_only_step', {}): log(f"model-only step: failed ({res['model_only_step']['error']})")
    elif 'model_only_step' in res:
        m, ratio = res['model_only_step'], res['end_to_end_over_model_only']
        log(f"model-only step: {m['ms_per_step']:.1f} ms, {m['tokens_per_s']:,.0f} tokens/s, MFU {m['mfu_vs_matmul']:.1%} of the measured matmul rate; "
            f"end to end / model only: " + (f"{ratio:.1%} (target >= 90%)" if ratio else "n/a (the run logged too few steps for an end-to-end rate)"))
    for name, r in res.get('mnli', {}).items():
        if 'skipped' in r: log(f'MNLI {name:10s}: skipped ({r["skipped"]})'); continue
        log(f"MNLI {name:10s}: dev matched {100 * r['matched']:.2f}%, mismatched {100 * r['mismatched']:.2f}% "
            f"(finetuned in {r['finetune_s']:.0f} s" + (f", cut short at step {r['steps']:,} of {r['planned_steps']:,}" if r.get('cut_short') else '')
            + f"); the seed: {SEED_MNLI}%")


def plot(res: dict, path: Path) -> Path:
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(2, 2, figsize=(13, 8.5)); ax = ax.ravel()
    p = res.get('pretraining') or {}
    ev = [r for r in p.get('held_out', []) if r.get('mlm_accuracy') is not None]
    if ev:
        ax[0].plot([r['step'] for r in ev], [100 * r['mlm_accuracy'] for r in ev], 'o-', label=res['settings']['preset'])
        ax[0].axhline(100 * ev[-1]['unigram_accuracy'], color='grey', ls=':', label='most frequent token'); ax[0].legend(fontsize=8)
    ax[0].set(title='held-out MLM accuracy (WikiText raw valid)', xlabel='step', ylabel='%')
    tr = [r for r in p.get('train_curve', []) if r.get('mlm_loss') is not None]
    ax[1].plot([r['step'] for r in tr], [r['mlm_loss'] for r in tr]); ax[1].set(title='training MLM loss', xlabel='step')
    mnli, bow = {k: v for k, v in res.get('mnli', {}).items() if 'matched' in v}, None if res['dry_run'] else bag_of_words()
    for i, split in enumerate(('matched', 'mismatched')):
        names = list(mnli)
        ax[2].bar([j + 0.4 * i for j in range(len(names))], [100 * mnli[n][split] for n in names], 0.4, label=f'dev {split}')
        if bow: ax[2].axhline(100 * bow[split], color=f'C{i}', ls='--', alpha=0.6, label=f'bag of words, {split}')
    ax[2].axhline(SEED_MNLI, color='k', ls=':', label=f'the seed ({SEED_MNLI}, dev matched)')
    ax[2].set_xticks([j + 0.2 for j in range(len(mnli))], [n + ('\n(cut short)' if mnli[n].get('cut_short') else '') for n in mnli])
    ax[2].set_ylim(0, 90)
    ax[2].set(title=f"MNLI after finetuning on {res.get('data', {}).get('mnli', {}).get('train', 0):,} pairs", ylabel='%')
    if mnli: ax[2].legend(fontsize=7)
    ph = res['phases']
    ax[3].barh(list(ph)[::-1], list(ph.values())[::-1]); ax[3].set(title=f"phases: {sum(ph.values()):.0f} s in all", xlabel='seconds')
    if res.get('end_to_end_over_model_only'):
        ax[3].text(0.98, 0.02, f"end-to-end step at {res['end_to_end_over_model_only']:.0%} of the model-only step's tokens/s",
                   transform=ax[3].transAxes, ha='right', fontsize=8)
    fig.suptitle(f"{res['settings']['preset']} on {res.get('environment', {}).get('gpu', 'CPU (dry run)')}"); fig.tight_layout()
    from atombert.files import save_figure
    return save_figure(fig, path, dpi=90)


def main(argv=None):
    args = parse_args(argv)
    if args.command == 'prepare': return prepare(args)
    if args.command == 'adopt': return adopt(args)
    args.manifest = checked_data(Path(args.data)) if args.data else None      # before anything runs or is written
    res = job(args)
    out = Path(args.out_dir); out.mkdir(parents=True, exist_ok=True)
    res['plot'] = str(drawn(res, out))
    report(res)
    log(f"wrote {write_result(res, out)} and {res['plot']}")
    if 'error' in res: sys.exit(1)
    return res


if __name__ == '__main__':
    main()

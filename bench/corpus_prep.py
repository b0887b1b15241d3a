"""Pretraining's data path at scale: tokenizer training and pretokenizing on the compressed Wikipedia shards as they are
(`../shared/data/wikipedia/*.txt.xz`, 9.29M words each), for one shard and for all seven, on this machine's cores.

Each phase runs in a fresh process, so its wall time and peak RSS are its own, and each is `pretrain`'s own code:

1. tokenizer training: `atombert.pretrain`'s tokenizer step (WordPiece, --vocab-size, trained on every paragraph of the
   corpus, streamed from the `xz` files; nothing is decompressed to disk);
2. pretokenizing: `atombert.data.pretokenize` (sentence splitting, encoding, the `uint16` token memmap), streamed, once
   for each process count of --num-proc, side by side (default: one process, then one a core, `pretokenize`'s own
   default); the peak RSS of the main process and of the largest worker, and a checksum of the memmap, which must not
   depend on the process count.

Then the two tokenizers are compared: how many entries they share, and how many tokens each needs per word of held-out
text (WikiText raw validation): whether a sample (one shard) would have given the same vocabulary.

    python bench/corpus_prep.py                      # about 10 minutes on 2 cores
    python bench/corpus_prep.py --small              # CI smoke size: two tiny compressed shards made here, vocabulary 1,000
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C

def parse_args(argv=None):
    p = C.script_parser(__doc__, 'bench/results/corpus_prep.json', 'two tiny shards written here, vocabulary 1,000')
    p.add_argument('--shards', default=None, help='folder of compressed shards (default: the shared Wikipedia shards)')
    p.add_argument('--held-out', default=None, help='held-out text for tokens per word (default: WikiText-2 raw validation)')
    p.add_argument('--vocab-size', type=int, default=30000)
    p.add_argument('--num-proc', default=None, help='pretokenize with each of these process counts, comma-separated (default: 1 and one a core)')
    p.add_argument('--worker', nargs=4, default=None, help=argparse.SUPPRESS)   # internal: phase, workdir, cache, files (JSON)
    args = p.parse_args(argv)
    if args.vocab_size < 100: raise SystemExit(f'error: --vocab-size must be >= 100, got {args.vocab_size}')
    from atombert.data import _available_cpus
    try: args.num_proc = sorted({int(n) for n in args.num_proc.split(',') if n.strip()}) if args.num_proc else sorted({1, _available_cpus()})
    except ValueError as e: raise SystemExit(f'error: --num-proc is comma-separated process counts ({e})')
    if not args.num_proc or min(args.num_proc) < 1: raise SystemExit('error: --num-proc must name process counts >= 1')
    return C.set_threads(args)

def worker(phase, workdir, cache, files) -> dict:
    "One phase in this (fresh) process: its seconds, peak RSS and counts."
    import common as C
    from atombert.corpora import load_corpus
    from atombert.data import pretokenize
    from atombert.pretrain import _trained_tokenizer
    from atombert.tokenizer import load_tokenizer, save_tokenizer
    from atombert.files import sha256_file
    workdir, settings = Path(workdir), json.loads((Path(workdir)/'settings.json').read_text())
    corpus = load_corpus(json.loads(files))
    t0 = time.perf_counter()
    if phase == 'tokenizer':
        tok = _trained_tokenizer(corpus, settings['vocab_size'], 'wordpiece', Path(cache))
        seconds = time.perf_counter() - t0
        save_tokenizer(tok, workdir/'tokenizer')
        counts = dict(vocab_learned=tok.get_vocab_size())
    else:
        tokens = pretokenize(corpus, load_tokenizer(workdir/'tokenizer'), cache, show_progress=False, num_proc=settings['num_proc'],
                             chunk_chars=settings['chunk_chars'])
        seconds, peak = time.perf_counter() - t0, C.peak_rss_mb()    # the peak before the checksum reads the memmap
        import resource
        return dict(seconds=seconds, peak_rss_mb=peak, tokens=tokens.num_tokens, documents=tokens.num_docs,
                    sentences=tokens.meta['num_sentences'], memmap_mb=(tokens.path/'tokens.bin').stat().st_size / 2**20,
                    processes=settings['num_proc'], worker_peak_rss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                    tokens_sha256=sha256_file(tokens.path/'tokens.bin'))
    return dict(seconds=seconds, peak_rss_mb=C.peak_rss_mb(), **counts)

def run_phase(phase, workdir, cache, files) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM='true')          # a user's default: the pool on
    r = subprocess.run([sys.executable, __file__, '--worker', phase, str(workdir), str(cache), json.dumps([str(f) for f in files])],
                       capture_output=True, text=True, env=env, timeout=3600)
    if r.returncode != 0: raise SystemExit(f'error: the {phase} phase failed:\n{r.stderr[-3000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])

def tokens_per_word(tok, text_file) -> float:
    lines = [l for l in Path(text_file).read_text(encoding='utf-8').splitlines() if l.strip()]
    return sum(len(e.ids) for e in tok.encode_batch(lines, add_special_tokens=False)) / sum(len(l.split()) for l in lines)

def small_shards(folder) -> list:
    import lzma, common as C
    text = C.shared_path(C.WIKITEXT_RAW[0]).read_bytes()
    half = len(text) // 2
    files = [Path(folder)/f'part-{i}.txt.xz' for i in (0, 1)]
    for f, part in zip(files, (text[:half], text[half:])): f.write_bytes(lzma.compress(part))
    return files

def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker))); return
    import common as C
    from atombert.tokenizer import load_tokenizer
    held_out = Path(args.held_out) if args.held_out else C.shared_path(C.WIKITEXT_RAW[0])
    rows, tokenizers = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        chunk_chars = 1 << 20                     # pretokenize's default unit of work
        if args.small:
            args.vocab_size, chunk_chars = 1000, 100_000   # the small shards in enough chunks for several processes
            shards = small_shards(tmp)
        else:
            folder = Path(args.shards) if args.shards else C.shared_path('wikipedia')
            shards = sorted(folder.glob('*.xz'))
            if not shards: raise SystemExit(f'error: no .xz shards in {folder}')
        for name, files in (('1 shard', shards[:1]), (f'{len(shards)} shards', shards)):
            workdir, cache = Path(tmp)/name.replace(' ', '_'), Path(tmp)/'cache'
            workdir.mkdir()
            compressed_mb = sum(f.stat().st_size for f in files) / 2**20
            print(f'{name}: {compressed_mb:.1f} MB compressed ...', flush=True)
            runs = {}
            for n in [None] + args.num_proc:       # None: the tokenizer
                (workdir/'settings.json').write_text(json.dumps(dict(vocab_size=args.vocab_size, num_proc=n, chunk_chars=chunk_chars)))
                runs[n] = run_phase('tokenizer' if n is None else 'pretokenize', workdir, cache, files)
                for d in cache.glob('tokens-*'): shutil.rmtree(d)      # the next process count encodes afresh
            tok_run, pre_run = runs.pop(None), runs[max(args.num_proc)]
            if len({r['tokens_sha256'] for r in runs.values()}) != 1:
                raise SystemExit(f'error: {name}: pretokenizing in {sorted(runs)} processes gave different memmaps')
            tokenizers[name] = load_tokenizer(workdir/'tokenizer')
            rows.append(dict(corpus=name, shards=len(files), compressed_mb=compressed_mb,
                             tokenizer_s=tok_run['seconds'], tokenizer_peak_rss_mb=tok_run['peak_rss_mb'],
                             vocab_learned=tok_run['vocab_learned'],
                             pretokenize_s=pre_run['seconds'], pretokenize_peak_rss_mb=pre_run['peak_rss_mb'],
                             pretokenize_processes=pre_run['processes'], pretokenize_worker_peak_rss_mb=pre_run['worker_peak_rss_mb'],
                             tokens=pre_run['tokens'], documents=pre_run['documents'], sentences=pre_run['sentences'],
                             memmap_mb=pre_run['memmap_mb'], pretokenize_tokens_per_s=pre_run['tokens'] / pre_run['seconds'],
                             tokenizer_tokens_per_s=pre_run['tokens'] / tok_run['seconds'],
                             pretokenize_by_processes=[dict(processes=n, seconds=r['seconds'], tokens_per_s=r['tokens'] / r['seconds'],
                                                            peak_rss_mb=r['peak_rss_mb'], worker_peak_rss_mb=r['worker_peak_rss_mb'])
                                                       for n, r in runs.items()],
                             pretokenize_speedup=runs[min(args.num_proc)]['seconds'] / pre_run['seconds'],
                             tokens_sha256=pre_run['tokens_sha256'],
                             total_min=(tok_run['seconds'] + pre_run['seconds']) / 60,
                             held_out_tokens_per_word=tokens_per_word(tokenizers[name], held_out)))
            shutil.rmtree(cache, ignore_errors=True)     # the next corpus tokenizes afresh
    one, all_ = (set(t.get_vocab()) for t in tokenizers.values())
    comparison = dict(shared_entries=len(one & all_), entries_one_shard=len(one), entries_all=len(all_),
                      shared_share=len(one & all_) / len(all_))
    print(f'\ndata path: WordPiece {args.vocab_size:,}, {os.cpu_count()} cores, tokenizers pool on, pretokenizing in '
          f"{rows[0]['pretokenize_processes']} processes (speed-up: over {args.num_proc[0]}, the memmaps byte-identical); each phase in a fresh process")
    C.print_table([r | dict(pretokenize_one_s=r['pretokenize_by_processes'][0]['seconds']) for r in rows], [('corpus', 'corpus', ''), ('compressed_mb', 'xz MB', '.1f'), ('tokens', 'tokens', ',.0f'),
                         ('tokenizer_s', 'tokenizer s', '.1f'), ('tokenizer_peak_rss_mb', 'tokenizer peak MB', ',.0f'),
                         ('pretokenize_s', 'pretokenize s', '.1f'), ('pretokenize_tokens_per_s', 'pretokenize tok/s', ',.0f'),
                         ('pretokenize_one_s', '1 process s', '.1f'), ('pretokenize_speedup', 'speed-up', '.2f'),
                         ('pretokenize_peak_rss_mb', 'pretokenize peak MB', ',.0f'),
                         ('pretokenize_worker_peak_rss_mb', 'worker peak MB', ',.0f'), ('total_min', 'total min', '.1f'),
                         ('held_out_tokens_per_word', 'held-out tok/word', '.3f')])
    print(f"\nthe one-shard tokenizer shares {comparison['shared_entries']:,} of the {comparison['entries_all']:,} entries "
          f"({comparison['shared_share']:.1%}) of the one trained on every shard")
    res = dict(benchmark='corpus_prep', args=vars(args), machine=C.machine_info('cpu'), rows=rows, vocabulary=comparison,
               held_out=str(held_out))
    print(f'wrote {C.write_json(args.out, res)}')

if __name__ == '__main__':
    main()

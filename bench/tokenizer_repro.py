"""Is tokenizer training reproducible, and what does it cost? The same corpus trained on in several fresh processes:
`tokenizers`' WordPiece trainer alone (what `train_tokenizer` ran before), `atombert.tokenizer.train_tokenizer`'s
WordPiece (which first lists the corpus's words and hands the trainer every inner character's `##c`, sorted) and
its Unigram.

`tokenizers`' trainers number some pieces, and break some ties, in hash-map order, and Rust seeds its hash maps anew in
every process (huggingface/tokenizers#1794), so each training runs in its own process; the rounds are interleaved
(trainer alone, WordPiece, Unigram, then again) so the times are taken side by side. For each way of training:

- distinct id maps and distinct token sets over the runs (1 and 1 = reproducible);
- for every run against the first: entries whose id differs, and for Unigram the largest difference of a score;
- against the trainer alone, in the same round: entries the trainer alone's vocabulary lacks, and the time ratio
  (the extra pass that lists the words is the WordPiece cost).

    python bench/tokenizer_repro.py       # WikiText-2 raw validation + test, 30,000 entries, 3 runs: about a minute
    python bench/tokenizer_repro.py --corpus ../shared/data/wikipedia/enwiki-2015-00-of-07.txt.xz --runs 2   # one shard
    python bench/tokenizer_repro.py --small   # CI smoke size (vocabulary 1,000, the validation file alone, 2 runs)
"""
import argparse, hashlib, json, os, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C

WAYS = {'trainer alone': 'wordpiece', 'train_tokenizer': 'wordpiece', 'train_tokenizer unigram': 'unigram'}

def parse_args(argv=None):
    p = C.script_parser(__doc__, 'bench/results/tokenizer_repro.json', 'vocabulary 1,000, the validation file alone, 2 runs',
                        threads_help="RAYON_NUM_THREADS for tokenizers' pool (off here, TOKENIZERS_PARALLELISM=false, as atombert run sets it)")
    p.add_argument('--corpus', nargs='*', default=None, help='text files, compressed or not (default: WikiText-2 raw validation and test)')
    p.add_argument('--vocab-size', type=int, default=30000)
    p.add_argument('--runs', type=int, default=3, help='fresh processes per way of training')
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)      # internal: one training, in a fresh process
    args = p.parse_args(argv)
    if args.threads < 1: raise SystemExit(f'error: --threads must be >= 1, got {args.threads}')
    if args.small: args.vocab_size, args.runs = 1000, 2
    if args.vocab_size < 100: raise SystemExit(f'error: --vocab-size must be >= 100, got {args.vocab_size}')
    if args.runs < 2: raise SystemExit(f'error: --runs must be >= 2 (reproducibility needs two trainings), got {args.runs}')
    if args.corpus is None: args.corpus = [str(C.shared_path(f)) for f in (C.WIKITEXT_RAW[:1] if args.small else C.WIKITEXT_RAW)]
    for f in args.corpus:
        if not Path(f).is_file(): raise SystemExit(f'error: --corpus {f}: no such file')
    return args

def worker(way, args) -> dict:
    "One training in this (fresh) process: its seconds and vocabulary (token -> [id, Unigram score or None])."
    from atombert import tokenizer as T
    t = time.perf_counter()
    if way == 'trainer alone':          # train_tokenizer's WordPiece without the listed inner pieces: the trainer as it is
        tok = T._untrained('wordpiece', lowercase=True)
        tok.train_from_iterator(T._texts(args.corpus)[0], T._trainer('wordpiece', args.vocab_size, 2, False))
    else: tok = T.train_tokenizer(args.corpus, vocab_size=args.vocab_size, kind=WAYS[way], show_progress=False)
    seconds = time.perf_counter() - t
    model = json.loads(tok.to_str())['model']
    if WAYS[way] == 'unigram': vocab = {piece: [i, score] for i, (piece, score) in enumerate(model['vocab'])}
    else: vocab = {piece: [i, None] for piece, i in model['vocab'].items()}
    return dict(seconds=seconds, vocab=vocab)

def digest(x) -> str: return hashlib.sha256(json.dumps(x, sort_keys=True).encode()).hexdigest()[:16]

def train_once(way, args) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM='false', RAYON_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, __file__, '--worker', way, '--vocab-size', str(args.vocab_size), '--threads', str(args.threads),
           '--runs', str(args.runs), '--corpus', *args.corpus]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if r.returncode != 0: raise SystemExit(f'error: a {way!r} training failed:\n{r.stderr[-3000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])

def summary(way, runs, alone) -> dict:
    "One row: how the runs of `way` differ from each other, and from the trainer alone's run of the same round."
    first = runs[0]['vocab']
    ids_moved = [sum(v[0] != first[p][0] for p, v in r['vocab'].items() if p in first) for r in runs[1:]]
    scores = [abs(v[1] - first[p][1]) for r in runs[1:] for p, v in r['vocab'].items() if p in first and v[1] is not None]
    row = dict(way=way, kind=WAYS[way], runs=len(runs), entries=len(first),
               distinct_id_maps=len({digest({p: v[0] for p, v in r['vocab'].items()}) for r in runs}),
               distinct_token_sets=len({digest(sorted(r['vocab'])) for r in runs}),
               ids_moved_max=max(ids_moved), largest_score_difference=max(scores) if scores else None,
               seconds=[r['seconds'] for r in runs], median_s=C.median(r['seconds'] for r in runs))
    if WAYS[way] == 'wordpiece' and way != 'trainer alone':
        row['only_here_vs_alone'] = [len(set(r['vocab']) - set(a['vocab'])) for r, a in zip(runs, alone)]
        row['time_ratio_vs_alone'] = C.median(r['seconds'] / a['seconds'] for r, a in zip(runs, alone))
    return row

def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args))); return
    trained = {way: [] for way in WAYS}
    for r in range(args.runs):
        for way in WAYS: trained[way].append(train_once(way, args))
        print(f'  round {r + 1}/{args.runs}: ' + '  '.join(f'{w} {t[-1]["seconds"]:.2f} s' for w, t in trained.items()), flush=True)
    rows = [summary(way, runs, trained['trainer alone']) for way, runs in trained.items()]
    print(f"\ntokenizer training in {args.runs} fresh processes each: {', '.join(args.corpus)}, {args.vocab_size:,} entries requested")
    C.print_table(rows, [('way', 'training', ''), ('kind', 'kind', ''), ('entries', 'entries', ',d'),
                         ('distinct_id_maps', 'id maps', 'd'), ('distinct_token_sets', 'token sets', 'd'),
                         ('ids_moved_max', 'ids moved (max)', ',d'), ('largest_score_difference', 'score diff', '.1e'),
                         ('median_s', 'median s', '.2f'), ('time_ratio_vs_alone', '× alone', '.2f')])
    for row in rows:
        if 'only_here_vs_alone' in row:
            print(f"{row['way']} against the trainer alone, same round: {row['only_here_vs_alone']} entries the trainer alone's lacks"
                  f" (of {row['entries']:,}); {row['time_ratio_vs_alone']:.2f}× its time")
    res = dict(benchmark='tokenizer_repro', args=vars(args), machine=C.machine_info('cpu'), rows=rows)
    print(f'wrote {C.write_json(args.out, res)}')

if __name__ == '__main__':
    main()

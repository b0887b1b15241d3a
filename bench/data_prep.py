"""How long does preparing the pretraining text take? Reading, tokenizer training and pretokenizing, timed apart on real
text, and scaled to WikiText-103: the CPU part of the full recipe, which the GPU check (tools/gpu_check.py) can only
extrapolate from the builtin corpus.

Each setting runs in a fresh process, one after the other: `pretrain`'s own steps on the text of --corpus
(default: the WikiText-2 raw validation and test files of the shared data folder, 2.4 MB of Wikipedia articles),
with `tokenizers`' thread pool off (`TOKENIZERS_PARALLELISM=false`, what `atombert run` sets, since DataLoader workers
fork after tokenizing) and on. The steps are those of `atombert.pretrain.pretrain`:

1. read: the corpus' documents into memory (`atombert.corpora.load_corpus`);
2. tokenizer training: `atombert.tokenizer.train_tokenizer` at --vocab-size (the recipe's WordPiece, 30,000);
3. pretokenizing: `atombert.data.pretokenize` (sentence splitting, encoding, the token memmap) of the documents.

Tokenizer training and pretokenizing are scaled linearly to WikiText-103's tokens (125M: the GPU check's assumption).
Pretokenizing is linear in the text. Tokenizer training counts words (linear) and then merges pieces (grows with the
number of distinct words, which grows more slowly than the text): linear scaling overestimates it.

    python bench/data_prep.py              # about a minute on 2 cores
    python bench/data_prep.py --small      # CI smoke size (vocabulary 1,000, the validation file alone)
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C
sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'tools'))
from gpu_timing import WIKITEXT103_TOKENS         # the one declaration of that assumption

SETTINGS = {'threads off': 'false', 'threads on': 'true'}     # TOKENIZERS_PARALLELISM

def parse_args(argv=None):
    p = C.script_parser(__doc__, 'bench/results/data_prep.json', 'vocabulary 1,000, the validation file alone', threads_help='cores the pool may use (RAYON_NUM_THREADS)')
    p.add_argument('--corpus', nargs='*', default=None, help='text files or folders (default: WikiText-2 raw validation and test)')
    p.add_argument('--vocab-size', type=int, default=30000)
    p.add_argument('--kind', choices=('wordpiece', 'unigram'), default='wordpiece')
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)      # internal: one setting, in a fresh process
    args = p.parse_args(argv)
    if args.vocab_size < 100: raise SystemExit(f'error: --vocab-size must be >= 100, got {args.vocab_size}')
    if args.threads < 1: raise SystemExit(f'error: --threads must be >= 1, got {args.threads}')
    if args.small: args.vocab_size = 1000
    if args.corpus is None:
        files = C.WIKITEXT_RAW[:1] if args.small else C.WIKITEXT_RAW
        args.corpus = [str(C.shared_path(f)) for f in files]
    for f in args.corpus:
        if not Path(f).exists(): raise SystemExit(f'error: --corpus {f}: no such file or folder')
    return args

def worker(args) -> dict:
    "In a fresh process: the three steps, timed."
    from atombert.corpora import load_corpus
    from atombert.data import pretokenize
    from atombert.tokenizer import train_tokenizer
    t0 = time.perf_counter()
    corpus = load_corpus(args.corpus)
    documents = list(corpus)
    t1 = time.perf_counter()
    texts = [paragraph for doc in documents for paragraph in doc]        # what Corpus.texts() gives pretrain's training
    tok = train_tokenizer(texts, vocab_size=args.vocab_size, kind=args.kind, show_progress=False)
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        tokens = pretokenize(documents, tok, cache, show_progress=False)
        num_tokens, num_sentences = tokens.num_tokens, tokens.meta['num_sentences']
    t3 = time.perf_counter()
    return dict(documents=len(documents), characters=sum(len(t) for t in texts), tokens=int(num_tokens),
                sentences=int(num_sentences), vocab_learned=tok.get_vocab_size(),
                read_s=t1 - t0, tokenizer_training_s=t2 - t1, pretokenize_s=t3 - t2)

def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args))); return
    import common as C
    rows = []
    for name, value in SETTINGS.items():
        env = dict(os.environ, TOKENIZERS_PARALLELISM=value, RAYON_NUM_THREADS=str(args.threads))
        cmd = [sys.executable, __file__, '--worker', name, '--vocab-size', str(args.vocab_size), '--kind', args.kind,
               '--threads', str(args.threads), '--corpus', *args.corpus]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        if r.returncode != 0: raise SystemExit(f'error: the {name!r} run failed:\n{r.stderr[-3000:]}')
        w = json.loads(r.stdout.strip().splitlines()[-1])
        scale = WIKITEXT103_TOKENS / w['tokens']
        rows.append(dict(setting=name, tokenizers_parallelism=value, **w,
                         tokens_per_s_training=w['tokens'] / w['tokenizer_training_s'],
                         tokens_per_s_pretokenize=w['tokens'] / w['pretokenize_s'],
                         wikitext103_training_min=w['tokenizer_training_s'] * scale / 60,
                         wikitext103_pretokenize_min=w['pretokenize_s'] * scale / 60,
                         wikitext103_min=(w['tokenizer_training_s'] + w['pretokenize_s']) * scale / 60))
        print(f"{name}: {w['tokens']:,} tokens; read {w['read_s']:.2f} s, tokenizer training {w['tokenizer_training_s']:.2f} s, "
              f"pretokenizing {w['pretokenize_s']:.2f} s", flush=True)
    print(f"\ndata preparation: {', '.join(args.corpus)}, {args.kind} {args.vocab_size:,}, scaled to WikiText-103 "
          f"({WIKITEXT103_TOKENS / 1e6:.0f}M tokens)")
    C.print_table(rows, [('setting', 'tokenizers pool', ''), ('tokens', 'tokens', ',.0f'), ('read_s', 'read s', '.2f'),
                         ('tokenizer_training_s', 'training s', '.2f'), ('pretokenize_s', 'pretokenize s', '.2f'),
                         ('tokens_per_s_pretokenize', 'pretokenize tokens/s', ',.0f'),
                         ('wikitext103_training_min', 'WT-103 training min', '.1f'),
                         ('wikitext103_pretokenize_min', 'WT-103 pretokenize min', '.1f'), ('wikitext103_min', 'WT-103 min', '.1f')])
    off, on = rows
    if off['tokens'] != on['tokens'] or off['vocab_learned'] != on['vocab_learned']:
        print(f"note: the two runs' tokenizers differ ({off['tokens']:,} vs {on['tokens']:,} tokens, {off['vocab_learned']:,} vs "
              f"{on['vocab_learned']:,} entries): train_tokenizer's WordPiece is reproducible from process to process "
              "with the pool off (bench/tokenizer_repro.py), so here the pool made the difference; Unigram's ids follow hash-map order (huggingface/tokenizers#1794)")
    print(f"\nthe pool on / off: tokenizer training {off['tokenizer_training_s'] / on['tokenizer_training_s']:.2f}× as fast, "
          f"pretokenizing {off['pretokenize_s'] / on['pretokenize_s']:.2f}×")
    res = dict(benchmark='data_prep', args=vars(args), machine=C.machine_info('cpu'), wikitext103_tokens=WIKITEXT103_TOKENS,
               scaling='linear in tokens (an overestimate for tokenizer training: its merges grow with distinct words)',
               rows=rows)
    print(f'wrote {C.write_json(args.out, res)}')

if __name__ == '__main__':
    main()

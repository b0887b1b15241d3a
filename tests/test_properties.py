"""Property-based tests (hypothesis) of the config, the model and the data pipeline.

- Random valid configs build, run forward and backward, and round-trip through `save_pretrained`/`from_pretrained`
  and, where ALBERT can express them, through transformers (`to_hf`/`from_hf`); random invalid configs raise one
  `ValueError` naming the field.
- Random text, random bytes, empty and very long input go through the tokenizer and the data pipeline without
  crashing: they are truncated, replaced or rejected with one clear `ValueError`.

Sizes are tiny and example counts modest, so the whole file runs in well under two minutes on two CPU cores.
"""
import functools, json, math, os, tempfile, warnings
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from hypothesis import event, example, given, settings, strategies as st

from atombert import hf
from atombert.config import ACTIVATIONS, NORMS, SENTENCE_OBJECTIVES, SHARING_MODES, AtomBertConfig
from atombert.corpora import load_corpus
from atombert.data import PretrainingDataset, pretokenize
from atombert.masking import MaskingCollator
from atombert.model import AtomBertForPreTraining, AtomBertForSequenceClassification, AtomBertModel
from atombert.albert import albert_incompatibility
from atombert.tokenizer import encode_pairs, special_token_ids, text_file_lines, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('ATOMBERT_SHARED_DATA', ROOT.parent/'shared'/'data'))
VALID = SHARED/'wikitext'/'wikitext-2-raw'/'wiki.valid.raw'
PROPERTY = settings(deadline=None, database=None)   # no time limit per example; no .hypothesis/ folder in the repo

# ------------------------------------------------------------------------------------------------ configs

@st.composite
def valid_configs(draw):
    "Small valid configs: every sharing mode (groups with several groups / inner layers), norm, activation, objective."
    heads = draw(st.integers(1, 4))
    hidden = heads * draw(st.integers(2, 6))
    sharing = draw(st.sampled_from(SHARING_MODES))
    if sharing == 'groups':
        inner = draw(st.integers(1, 4))
        steps = draw(st.integers(1, 4 // inner))              # ALBERT's num_hidden_layers
        shape = dict(num_layers=steps * inner, inner_group_num=inner, num_groups=draw(st.integers(1, steps)))
    else: shape = dict(num_layers=draw(st.integers(1, 4)))
    vocab = draw(st.integers(50, 200))
    return AtomBertConfig(
        vocab_size=vocab, hidden_size=hidden, num_heads=heads, sharing=sharing, **shape,
        embedding_size=draw(st.one_of(st.just(hidden), st.integers(2, 24))),
        intermediate_size=draw(st.integers(4, 48)), norm=draw(st.sampled_from(NORMS)),
        hidden_act=draw(st.sampled_from(ACTIVATIONS)), sentence_objective=draw(st.sampled_from(SENTENCE_OBJECTIVES)),
        hidden_dropout=draw(st.sampled_from([0.0, 0.1, 0.5])), attention_dropout=draw(st.sampled_from([0.0, 0.1])),
        classifier_dropout=draw(st.sampled_from([0.0, 0.1])), max_position_embeddings=draw(st.integers(8, 40)),
        type_vocab_size=draw(st.integers(1, 3)), layer_norm_eps=draw(st.sampled_from([1e-12, 1e-6, 1e-5])),
        initializer_range=draw(st.floats(0.01, 0.2)), pad_token_id=draw(st.integers(0, vocab - 1)),
        num_labels=draw(st.integers(1, 4)))


@st.composite
def batches(draw, config, labels=True):
    "A random batch for `config`: padded rows (never fully masked), token types, MLM and sentence labels."
    B, T = draw(st.integers(1, 3)), draw(st.integers(2, min(12, config.max_position_embeddings)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    lengths = torch.tensor([draw(st.integers(1, T)) for _ in range(B)])
    attention_mask = (torch.arange(T) < lengths[:, None]).long()
    batch = dict(input_ids=torch.randint(config.vocab_size, (B, T), generator=g),
                 attention_mask=attention_mask, token_type_ids=torch.randint(config.type_vocab_size, (B, T), generator=g))
    if labels:
        picked = (torch.rand(B, T, generator=g) < 0.3) & attention_mask.bool()
        picked[0, 0] = True                                  # at least one MLM target
        batch['labels'] = torch.where(picked, torch.randint(config.vocab_size, (B, T), generator=g), -100)
        if config.sentence_objective != 'none': batch['sentence_label'] = torch.randint(2, (B,), generator=g)
    return batch


@settings(PROPERTY, max_examples=40)
@given(config=valid_configs(), data=st.data())
def test_valid_config_trains(config, data):
    "Forward and backward in train mode give finite losses, and finite gradients for every parameter the losses use."
    torch.manual_seed(0)
    model = AtomBertForPreTraining(config).train()
    batch = data.draw(batches(config))
    out = model(**batch)
    assert torch.isfinite(out.loss) and torch.isfinite(out.mlm_loss)
    if config.sentence_objective == 'none': assert out.sentence_loss is None and out.sentence_logits is None
    else: assert torch.isfinite(out.sentence_loss) and out.sentence_logits.shape == (len(batch['input_ids']), 2)
    assert out.mlm_logits.shape == ((batch['labels'] != -100).sum(), config.vocab_size)
    out.loss.backward()
    unused = {n for n, _ in model.named_parameters() if n.startswith('model.pooler.')} if config.sentence_objective == 'none' else set()
    no_grad = {n for n, p in model.named_parameters() if p.grad is None}
    assert no_grad == unused, f'parameters without a gradient: {sorted(no_grad - unused)}; unexpectedly with: {sorted(unused - no_grad)}'
    for n, p in model.named_parameters():
        if p.grad is not None: assert torch.isfinite(p.grad).all(), n


ARCHS = (AtomBertForPreTraining, AtomBertForSequenceClassification, AtomBertModel)
HF_ARCHS = {AtomBertForPreTraining: 'AlbertForPreTraining', AtomBertForSequenceClassification: 'AlbertForSequenceClassification',
            AtomBertModel: 'AlbertModel'}

def _outputs(model, batch):
    with torch.no_grad(): out = model(**batch)
    if isinstance(model, AtomBertForPreTraining): return {'mlm': out.mlm_logits, 'sentence': out.sentence_logits}
    if isinstance(model, AtomBertForSequenceClassification): return {'logits': out.logits}
    return {'hidden': out.last_hidden_state, 'pooled': out.pooler_output}

def _hf_outputs(hf_model, batch):
    with torch.no_grad(): out = hf_model(**batch)
    name = type(hf_model).__name__
    if name == 'AlbertForPreTraining': return {'mlm': out.prediction_logits, 'sentence': out.sop_logits}
    if name == 'AlbertForSequenceClassification': return {'logits': out.logits}
    return {'hidden': out.last_hidden_state, 'pooled': out.pooler_output}

def _assert_same_as_hf(hf_model, batch, expected):
    hf_out = _hf_outputs(hf_model, batch)
    if 'sentence' in expected and expected['sentence'] is None:   # ALBERT always has an SOP head: a zero one
        assert not hf_out.pop('sentence').any(); hf_out['sentence'] = None
    _assert_same(hf_out, expected, atol=1e-5)

def _assert_same(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if a[k] is None or b[k] is None: assert a[k] is None and b[k] is None, k; continue
        assert a[k].shape == b[k].shape, k
        if atol == 0: assert torch.equal(a[k], b[k]), k
        else: torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=lambda m: f'{k}: {m}')


@settings(PROPERTY, max_examples=30)
@given(config=valid_configs(), arch=st.sampled_from(ARCHS), data=st.data())
def test_valid_config_round_trips(config, arch, data):
    "save_pretrained → from_pretrained gives identical outputs; to_hf gives equal outputs where ALBERT can express the model."
    torch.manual_seed(0)
    model = arch(config).eval()
    batch = data.draw(batches(config, labels=False))
    expected = _outputs(model, batch)
    why = albert_incompatibility(config, arch.__name__)
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            loaded = arch.from_pretrained(d).eval()
        assert not [w for w in caught if 'newly initialized' in str(w.message)]   # every tensor came back
        if why is None:                                      # an ALBERT checkpoint: transformers reads it as it is
            import transformers
            _assert_same_as_hf(getattr(transformers, HF_ARCHS[arch]).from_pretrained(d).eval(), batch, expected)
    assert loaded.config == config
    _assert_same(_outputs(loaded, batch), expected)
    if why is not None:
        with pytest.raises(ValueError, match='transformers ALBERT cannot express') as e: hf.to_hf(model)
        assert why in str(e.value)
        return
    hf_model = hf.to_hf(model)
    _assert_same_as_hf(hf_model, batch, expected)
    back = hf.from_hf(hf_model)
    assert type(back) is arch and back.config == config
    _assert_same(_outputs(back, batch), expected, atol=1e-6)


# Invalid configs: one mutation of a valid config's dict, and the field its error must name.
SIZES = ('vocab_size', 'embedding_size', 'hidden_size', 'num_layers', 'num_heads', 'intermediate_size',
         'max_position_embeddings', 'type_vocab_size', 'num_labels')
DROPOUTS = ('hidden_dropout', 'attention_dropout', 'classifier_dropout')
CHOICES = {'sharing': SHARING_MODES, 'norm': NORMS, 'hidden_act': ACTIVATIONS, 'sentence_objective': SENTENCE_OBJECTIVES}
NOT_A_NUMBER = st.sampled_from(['8', None, [8], {'x': 1}, True, False, b'8'])

@st.composite
def invalid_configs(draw):
    "(config dict, the field the error must name)."
    d = draw(valid_configs()).to_dict()
    kind = draw(st.sampled_from(['size', 'size_type', 'divisible', 'choice', 'choice_type', 'groups_layers',
                                 'groups_count', 'groups_unshared', 'dropout', 'positive_float', 'float_type', 'pad']))
    if kind == 'size':
        field = draw(st.sampled_from(SIZES + ('num_groups', 'inner_group_num')))
        d[field] = draw(st.integers(max_value=0))
    elif kind == 'size_type':
        field = draw(st.sampled_from(SIZES + ('num_groups', 'inner_group_num', 'pad_token_id')))
        d[field] = draw(st.one_of(NOT_A_NUMBER, st.floats(allow_nan=True), st.just(float(d[field]))))
    elif kind == 'divisible':
        heads = draw(st.integers(2, 6))
        field, d['num_heads'] = 'hidden_size', heads
        d['hidden_size'] = heads * draw(st.integers(1, 6)) + draw(st.integers(1, heads - 1))
    elif kind == 'choice':
        field = draw(st.sampled_from(sorted(CHOICES)))
        d[field] = draw(st.text(max_size=12).filter(lambda s: s not in CHOICES[field]))
    elif kind == 'choice_type':
        field = draw(st.sampled_from(sorted(CHOICES)))
        d[field] = draw(st.sampled_from([None, 1, 0.5, ['all'], ('post',), b'relu']))
    elif kind == 'groups_layers':                          # inner_group_num does not divide num_layers
        inner = draw(st.integers(2, 4))
        field = 'num_layers'
        d.update(sharing='groups', inner_group_num=inner, num_groups=1,
                 num_layers=inner * draw(st.integers(0, 2)) + draw(st.integers(1, inner - 1)))
    elif kind == 'groups_count':                           # more groups than ALBERT layers
        inner, steps = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        field = 'num_groups'
        d.update(sharing='groups', inner_group_num=inner, num_layers=inner * steps,
                 num_groups=steps + draw(st.integers(1, 3)))
    elif kind == 'groups_unshared':                        # group settings without sharing='groups'
        field = draw(st.sampled_from(['num_groups', 'inner_group_num']))
        d.update(sharing=draw(st.sampled_from([s for s in SHARING_MODES if s != 'groups'])), num_groups=1, inner_group_num=1)
        d[field] = draw(st.integers(2, 4))
    elif kind == 'dropout':
        field = draw(st.sampled_from(DROPOUTS))
        d[field] = draw(st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0), st.just(math.nan), st.just(1)))
    elif kind == 'positive_float':
        field = draw(st.sampled_from(['layer_norm_eps', 'initializer_range']))
        d[field] = draw(st.one_of(st.floats(max_value=0.0), st.sampled_from([math.nan, math.inf, -math.inf, 0, -1])))
    elif kind == 'float_type':
        field = draw(st.sampled_from(DROPOUTS + ('layer_norm_eps', 'initializer_range')))
        d[field] = draw(NOT_A_NUMBER)
    else:
        field = 'pad_token_id'
        d[field] = draw(st.one_of(st.integers(max_value=-1), st.integers(d['vocab_size'], d['vocab_size'] + 1000)))
    return d, field


_TINY = AtomBertConfig.preset('tiny').to_dict()

@settings(PROPERTY, max_examples=150)
@example(case=({**_TINY, 'layer_norm_eps': math.nan}, 'layer_norm_eps'), via='init')
@example(case=({**_TINY, 'layer_norm_eps': math.inf}, 'layer_norm_eps'), via='from_json')
@example(case=({**_TINY, 'initializer_range': math.inf}, 'initializer_range'), via='replace')
@example(case=({**_TINY, 'initializer_range': math.nan}, 'initializer_range'), via='from_dict')
@given(case=invalid_configs(), via=st.sampled_from(['init', 'from_dict', 'replace', 'from_json']))
def test_invalid_config_raises_value_error(case, via):
    "Every invalid config fails with ValueError naming the field, whichever way it is made."
    d, field = case
    base = AtomBertConfig.preset('tiny')
    make = {'init': lambda: AtomBertConfig(**d), 'from_dict': lambda: AtomBertConfig.from_dict(d),
            'replace': lambda: base.replace(**d), 'from_json': lambda: AtomBertConfig.from_json(json.dumps(d))}[via]
    if via == 'from_json':
        try: json.dumps(d)
        except TypeError: make = lambda: AtomBertConfig.from_dict(d)   # bytes are not JSON
    with pytest.raises(ValueError) as e: make()
    assert f'AtomBertConfig.{field}=' in str(e.value), str(e.value)


@settings(PROPERTY, max_examples=30)
@given(config=valid_configs(), name=st.text(min_size=1, max_size=10).filter(
    lambda s: s not in AtomBertConfig.__dataclass_fields__ and s not in ('name', 'self')))   # those are parameter names
def test_unknown_config_field_raises_value_error(config, name):
    "A field that does not exist is named, by from_dict, replace, from_json and preset overrides alike."
    for make in (lambda: AtomBertConfig.from_dict({**config.to_dict(), name: 1}), lambda: config.replace(**{name: 1}),
                 lambda: AtomBertConfig.from_json(json.dumps({name: 1})), lambda: AtomBertConfig.preset('tiny', **{name: 1})):
        with pytest.raises(ValueError, match='has no field') as e: make()
        assert repr(name) in str(e.value)


@settings(PROPERTY, max_examples=40)
@given(config=valid_configs())
def test_valid_config_json_round_trip(config):
    assert AtomBertConfig.from_json(config.to_json()) == config
    assert AtomBertConfig.from_dict(config.to_dict()) == config == config.replace()


# ------------------------------------------------------------------------------------------------ text

@functools.cache
def tokenizer(kind):
    "A tokenizer trained once per kind on real text (WikiText-2 validation)."
    lines = [l for l in VALID.read_text(encoding='utf-8').splitlines() if l.strip()][:1500]
    return train_tokenizer(lines, vocab_size=600 if kind == 'wordpiece' else 400, kind=kind, max_length=96,
                           show_progress=False)

KINDS = st.sampled_from(['wordpiece', 'unigram'])
WORDS = ['the', 'The', 'of', 'and', 'game', 'was', '.', ',', '@-@', 'Valkyria', 'naïve', 'café', '東京', '🙂',
         '\t', '\n', '\r\n', '\x00', '\u2028', '\ufeff', '[SEP]', '[MASK]', ' ', '  ']
# text of every kind: any Unicode, random bytes decoded with replacement, word soup, and very long text
TEXTS = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=300).map(lambda b: b.decode('utf-8', errors='replace')),
    st.lists(st.sampled_from(WORDS), max_size=60).map(' '.join),
    st.tuples(st.text(min_size=1, max_size=20), st.integers(100, 3000)).map(lambda t: t[0] * t[1]),
)


@settings(PROPERTY, max_examples=60)
@given(kind=KINDS, first=st.lists(TEXTS, max_size=4), second=st.none() | st.just(True), data=st.data(),
       max_length=st.none() | st.integers(5, 40))
def test_encode_pairs_any_text(kind, first, second, data, max_length):
    "Any text encodes; rows respect the truncation, ids are in the vocabulary, and rows are [CLS] ... [SEP]."
    tok = tokenizer(kind)
    if second: second = data.draw(st.lists(TEXTS, min_size=len(first), max_size=len(first)))
    enc = encode_pairs(tok, first, second, max_length=max_length)
    ids = special_token_ids(tok)
    limit = max_length or tok.truncation['max_length']
    assert len(enc['input_ids']) == len(first)
    for row, types, mask in zip(enc['input_ids'], enc['token_type_ids'], enc['attention_mask']):
        assert 2 <= len(row) <= limit and len(types) == len(mask) == len(row)
        assert all(0 <= i < tok.get_vocab_size() for i in row)
        assert row[0] == ids['cls'] and row[-1] == ids['sep'] and mask == [1] * len(row)
        assert types == sorted(types) and set(types) <= ({0, 1} if second else {0})
    assert tok.truncation['max_length'] == 96 and tok.padding is None    # settings restored
    if second and max(map(len, first + second), default=0) <= 80:       # tokenizers' own truncation is affordable
        reference = Tokenizer.from_str(tok.to_str())
        reference.enable_truncation(max_length or 96)
        assert enc['input_ids'] == [e.ids for e in reference.encode_batch(list(zip(first, second)))]


@settings(PROPERTY, max_examples=20)
@given(kind=KINDS, raw=st.binary(min_size=1, max_size=50), how=st.sampled_from(['bytes', 'list', 'surrogate', 'none']))
def test_encode_pairs_rejects_non_text(kind, raw, how):
    "Bytes, lone surrogates and non-strings are rejected with one ValueError that says so, never a TypeError."
    bad = {'bytes': raw, 'list': [raw], 'surrogate': [raw.decode('utf-8', errors='surrogateescape') + '\udcff'],
           'none': ['ok', None]}[how]
    with pytest.raises(ValueError, match='str|Unicode'): encode_pairs(tokenizer(kind), bad)
    with pytest.raises(ValueError, match='str|Unicode'): encode_pairs(tokenizer(kind), ['a'] * len(bad), bad)


@settings(PROPERTY, max_examples=25)
@given(kind=KINDS, texts=st.lists(TEXTS, max_size=5), vocab_size=st.integers(6, 300), lowercase=st.booleans())
def test_train_tokenizer_any_text(kind, texts, vocab_size, lowercase):
    "Training on any texts gives a tokenizer within vocab_size, or one ValueError (empty corpus, vocabulary too small)."
    try: tok = train_tokenizer(texts, vocab_size=vocab_size, kind=kind, lowercase=lowercase, max_length=16, show_progress=False)
    except ValueError as e:
        assert 'empty corpus' in str(e) or 'too small' in str(e), str(e)
        return
    assert tok.get_vocab_size() <= vocab_size and special_token_ids(tok) == {'pad': 0, 'unk': 1, 'cls': 2, 'sep': 3, 'mask': 4}
    for row in encode_pairs(tok, texts, texts[::-1])['input_ids']:
        assert len(row) <= 16 and all(0 <= i < tok.get_vocab_size() for i in row)


def test_empty_inputs_fail_clearly():
    tok = tokenizer('wordpiece')
    assert encode_pairs(tok, []) == {'input_ids': [], 'token_type_ids': [], 'attention_mask': []}
    assert encode_pairs(tok, '', '') == {'input_ids': [[2, 3, 3]], 'token_type_ids': [[0, 0, 1]], 'attention_mask': [[1, 1, 1]]}
    for empty in ([], [''], ['  ', '\n'], iter([])):
        with pytest.raises(ValueError, match='empty corpus'): train_tokenizer(empty, vocab_size=100, show_progress=False)
    with pytest.raises(ValueError, match='empty corpus'): load_corpus([])
    with tempfile.TemporaryDirectory() as d:
        with pytest.raises(ValueError, match='empty corpus'): load_corpus(d)
        with pytest.raises(ValueError, match='empty corpus'): pretokenize([], tok, d, show_progress=False)
        with pytest.raises(ValueError, match='empty corpus'): pretokenize([[], ['', ' ']], tok, d, show_progress=False)
        with pytest.raises(ValueError, match='empty corpus'): pretokenize([['\x00\x01\u200b']], tok, d, show_progress=False)
        corpus = pretokenize([['one'], ['two']], tok, d, show_progress=False)   # one token per document: no pairs
        with pytest.raises(ValueError, match='no examples'): PretrainingDataset(corpus, tok, seq_len=16)
        assert not list(Path(d).glob('.*.tmp'))                      # failed runs leave nothing behind
    collator = MaskingCollator(tok)
    with pytest.raises(ValueError, match='empty batch'): collator([])
    with pytest.raises(ValueError, match='no tokens'): collator([{'input_ids': []}])
    with pytest.raises(ValueError, match='outside the vocabulary'): collator([{'input_ids': [2, -1, 3]}])
    with pytest.raises(ValueError, match='outside the vocabulary'): collator([{'input_ids': [2, 10**6, 3]}])


# Files: random bytes, random text with NULs, bad UTF-8 and every kind of line break.
FILE_BYTES = st.one_of(
    st.binary(max_size=400),
    st.lists(st.sampled_from(WORDS), max_size=80).map(lambda w: ' '.join(w).encode('utf-8')),
    st.tuples(st.text(max_size=200), st.binary(max_size=4), st.text(max_size=200)).map(
        lambda t: t[0].encode('utf-8') + t[1] + t[2].encode('utf-8')),
    st.text(max_size=300).map(lambda s: s.encode('utf-8')),
)

def _expected_text(data: bytes):
    "What a UTF-8 text file holds as text (universal newlines), or the kind of error it must be rejected with."
    try: text = data.decode('utf-8')
    except UnicodeDecodeError as e: return None, e.start
    return ('binary' if '\x00' in text else text.replace('\r\n', '\n').replace('\r', '\n')), None

def _check_rejection(message, path, data):
    "A rejected file is named, and the reason given is true."
    assert str(path) in message, message
    if 'binary file' in message: assert b'\x00' in data
    else:
        assert 'is not UTF-8 text' in message, message
        _, start = _expected_text(data)
        assert start is not None and f'at byte {start})' in message, (message, start)


@settings(PROPERTY, max_examples=80)
@given(data=FILE_BYTES, suffix=st.sampled_from(['.txt', '.raw', '.bin']))
def test_text_files(data, suffix):
    "text_file_lines and load_corpus read UTF-8 text and reject binary or non-UTF-8 files with one ValueError naming them."
    text, bad_at = _expected_text(data)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d)/f'corpus{suffix}'
        path.write_bytes(data)
        event('text' if text not in (None, 'binary') else 'rejected')
        try: lines = list(text_file_lines(path))
        except ValueError as e:
            assert text is None or text == 'binary'; _check_rejection(str(e), path, data)
        else: assert text not in (None, 'binary') and ''.join(lines) == text
        try: docs = list(load_corpus(path))
        except ValueError as e:
            if text in (None, 'binary'): _check_rejection(str(e), path, data)
            else:   # nothing but blank lines and WikiText headings
                assert 'empty corpus' in str(e) and str(path) in str(e), str(e)
                assert all(not l.strip() or l.strip().startswith('=') for l in text.split('\n')), text
        else:
            assert text not in (None, 'binary') and docs
            assert all(p and p == p.strip() and '\n' not in p for doc in docs for p in doc)
            try: assert pretokenize(path, tokenizer('wordpiece'), Path(d)/'cache', show_progress=False).num_tokens > 0
            except ValueError as e: assert 'empty corpus' in str(e) and str(path) in str(e), str(e)
        try: train_tokenizer(path, vocab_size=300, show_progress=False)
        except ValueError as e:
            if text in (None, 'binary'): _check_rejection(str(e), path, data)
            else: assert 'empty corpus' in str(e) or 'too small' in str(e), str(e)


def test_bad_bytes_after_the_first_64k():
    "Found only while streaming: still one ValueError naming the file and the true offset, and no cache left behind."
    good = VALID.read_bytes()[:200_000]
    good = good[:good.rindex(b'\n') + 1]
    tok = tokenizer('wordpiece')
    with tempfile.TemporaryDirectory() as d:
        path = Path(d)/'late.raw'
        path.write_bytes(good + b'caf\xe9\n' + good)
        message = f'{path} is not UTF-8 text (invalid continuation byte at byte {len(good) + 3})'
        with pytest.raises(ValueError, match='not UTF-8') as e: list(text_file_lines(path))
        assert str(e.value) == message
        with pytest.raises(ValueError, match='not UTF-8') as e: pretokenize(path, tok, Path(d)/'cache', show_progress=False)
        assert str(e.value) == message
        assert not list((Path(d)/'cache').iterdir())


# Pretokenize → PretrainingDataset → MaskingCollator on random documents.
DOCS = st.lists(st.lists(TEXTS, max_size=4), min_size=1, max_size=4)

@settings(PROPERTY, max_examples=40)
@given(kind=KINDS, docs=DOCS, seq_len=st.integers(5, 48), objective=st.sampled_from(['sop', 'nsp', 'none']),
       ngram=st.integers(1, 3), whole_word=st.booleans(), mlm_probability=st.sampled_from([0.15, 0.5, 0.9]),
       batch_size=st.integers(1, 4))
def test_data_pipeline_any_documents(kind, docs, seq_len, objective, ngram, whole_word, mlm_probability, batch_size):
    "Rows never exceed seq_len, are [CLS] A [SEP] (B [SEP]), and MLM labels only ever sit on real, non-special tokens."
    tok = tokenizer(kind)
    special = special_token_ids(tok)
    with tempfile.TemporaryDirectory() as d:
        try: corpus = pretokenize(docs, tok, d, show_progress=False)
        except ValueError as e:
            assert 'empty corpus' in str(e)
            assert not any(tok.encode(p, add_special_tokens=False).ids for doc in docs for p in doc)
            event('no tokens')
            return
        assert corpus.num_tokens > 0 and int(corpus.tokens.max()) < tok.get_vocab_size()
        try: dataset = PretrainingDataset(corpus, tok, seq_len=seq_len, objective=objective)
        except ValueError as e:
            if 'NSP takes half its B segments' in str(e):
                assert objective == 'nsp' and corpus.num_docs == 1
                event('NSP refused one document')
                return
            assert 'no examples' in str(e) and objective != 'none'
            assert all(len(corpus.doc(i)) == 1 for i in range(corpus.num_docs))
            event('no examples')
            return
        examples = [dataset[i] for i in range(min(len(dataset), 12))]
        for e in examples:
            ids = e['input_ids'].tolist()
            assert 3 <= len(ids) <= seq_len and ids[0] == special['cls'] and ids[-1] == special['sep']
            assert e['token_type_ids'].tolist() == sorted(e['token_type_ids'].tolist())
            if objective != 'none': assert e['sentence_label'] in (0, 1)
        event(f'collated {len(examples)} examples')
        collate = MaskingCollator(tok, mlm_probability=mlm_probability, ngram=ngram, whole_word=whole_word)
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            batch = collate(chunk)
            lengths = batch['attention_mask'].sum(1)
            assert lengths.tolist() == [len(e['input_ids']) for e in chunk] and int(lengths.max()) <= seq_len
            assert batch['input_ids'].shape[1] <= seq_len + 7          # padded to a multiple of 8 at most
            original = torch.nn.utils.rnn.pad_sequence([e['input_ids'] for e in chunk], batch_first=True,
                                                       padding_value=special['pad'])
            original = torch.nn.functional.pad(original, (0, batch['input_ids'].shape[1] - original.shape[1]),
                                               value=special['pad'])
            targets = batch['labels'] != -100
            assert (batch['attention_mask'].bool() | ~targets).all()             # never on padding
            assert not torch.isin(original[targets], torch.tensor(list(special.values()))).any()
            assert torch.equal(batch['labels'][targets], original[targets])
            assert torch.equal(batch['input_ids'][~targets], original[~targets])  # only targets are changed
            assert ((batch['input_ids'] >= 0) & (batch['input_ids'] < tok.get_vocab_size())).all()

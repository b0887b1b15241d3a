"""CUDA checks (issue 15), skipped where `torch.cuda.is_available()` is False. `tools/gpu_check.sh` runs them on the GPU
machine (`python -m pytest -m cuda tests/test_cuda.py`):

- outputs equal to transformers' ALBERT on CUDA in fp32 (TF32 off), as 04_hf checks them on CPU;
- a bf16 training run (finite, decreasing loss) and an fp16 one with the loss scaler, where a forced overflow is
  skipped (parameters unchanged, scale halved) and counted by `fit`'s skip counter;
- flash attention selected for the model's bf16 training step (and the kernel agrees with the math one);
- a `torch.compile`d training step equal to the eager one;
- a checkpoint and an exact resume after a crash on CUDA, as tests/test_faults.py checks them on CPU.

With ATOMBERT_CUDA_REPORT=FILE set, the tests also write what they measured (differences, kernels, counters) to FILE
as JSON: `tools/gpu_check.py` puts it in its report.

With ATOMBERT_CUDA_TESTS_DEVICE=cpu set and no GPU, the same tests run on the CPU, so that their own code cannot rot
before a GPU runs it (CI does this: tests/test_gpu_check.py; tools/gpu_rehearsal.sh does it with the GPU machine's
versions of Python, torch and transformers). Two things only CUDA has are stood in for there: fp16 autocast (atombert
refuses it on a CPU; the test lets it through) and the CUDA name of the flash attention op (the CPU's is `..._for_cpu`)."""
import itertools, json, os
os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')   # deterministic cuBLAS for the exact-resume test (before CUDA starts)
from pathlib import Path

import pytest
import torch

DEVICE = 'cuda' if torch.cuda.is_available() else os.environ.get('ATOMBERT_CUDA_TESTS_DEVICE')
ON_CPU = DEVICE == 'cpu'
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(DEVICE not in ('cuda', 'cpu'), reason='needs a CUDA GPU')]

REPORT = {}


@pytest.fixture(scope='module', autouse=True)
def report():
    "What the tests measured, written to $ATOMBERT_CUDA_REPORT (if set) when the module ends, failures included."
    yield REPORT
    if (path := os.environ.get('ATOMBERT_CUDA_REPORT')):
        Path(path).write_text(json.dumps({'gpu': torch.cuda.get_device_name() if DEVICE == 'cuda' else DEVICE, 'torch': torch.__version__, **REPORT},
                                         indent=1, default=str))


@pytest.fixture(autouse=True)
def exact_fp32(monkeypatch):
    "Full fp32 matmuls and convolutions (no TF32) for every test."
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


# ---------------------------------------------------------------- equal outputs with transformers (04_hf, on CUDA)

def jitter(model, seed=0, std=0.1):
    "Add noise to every parameter, so no tensor is a default that a wrong mapping could match by chance."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters(): p.add_(torch.randn(p.shape, generator=g).to(p.device) * std)
    return model.eval().requires_grad_(False)


def interop_batch(config, seed=0, B=4, T=16, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, config.vocab_size, (B, T), generator=g)
    lengths = torch.tensor([T, T - 3, T // 2, 2])[:B]        # padding at the end of all rows but the first
    am = (torch.arange(T) < lengths[:, None]).long()
    ids = ids.masked_fill(am == 0, config.pad_token_id)
    tt = torch.randint(0, config.type_vocab_size, (B, T), generator=g)
    return ids.to(device), am.to(device), tt.to(device)


def maxdiff(a, b): return (a - b).abs().max().item()


def compare(m, hf, seed=0, T=16):
    "Max abs differences between atombert `m` and transformers `hf` on one batch, per output."
    from atombert.model import AtomBertModel, AtomBertForPreTraining, AtomBertForSequenceClassification
    ids, am, tt = interop_batch(m.config, seed, T=T)
    base, hf_base = (m, hf) if isinstance(m, AtomBertModel) else (m.model, hf.albert)
    a, b = base(ids, am, tt), hf_base(ids, attention_mask=am, token_type_ids=tt)
    r = dict(hidden=maxdiff(a.last_hidden_state, b.last_hidden_state), pooled=maxdiff(a.pooler_output, b.pooler_output))
    if isinstance(m, AtomBertForPreTraining):
        a, b = m(ids, am, tt), hf(ids, attention_mask=am, token_type_ids=tt)
        r['mlm'] = maxdiff(a.mlm_logits, b.prediction_logits)
        r['sop'] = maxdiff(a.sentence_logits, b.sop_logits)
    if isinstance(m, AtomBertForSequenceClassification):
        r['logits'] = maxdiff(m(ids, am, tt).logits, hf(ids, attention_mask=am, token_type_ids=tt).logits)
    return r


INTEROP_CASES = {   # some of 04_hf's configurations, and the full recipe's preset
    'groups 6 = 2 groups x 3 inner': ('tiny', dict(sharing='groups', num_layers=6, num_groups=2, inner_group_num=3), 1e-5),
    'none, gelu': ('tiny', dict(sharing='none', num_layers=3, hidden_act='gelu'), 1e-5),
    'E == H, relu': ('tiny', dict(embedding_size=64, num_layers=3, hidden_act='relu'), 1e-5),
    'atombert-8m': ('atombert-8m', {}, 3e-5),      # wider and 128 tokens: on CPU its outputs agree to 2.6e-6
}


@pytest.mark.parametrize('case', list(INTEROP_CASES))
def test_outputs_equal_transformers_on_cuda(case):
    from atombert.config import AtomBertConfig
    from atombert.model import AtomBertModel, AtomBertForPreTraining, AtomBertForSequenceClassification
    from atombert.hf import to_hf, from_hf
    preset, kw, tol = INTEROP_CASES[case]
    cfg = AtomBertConfig.preset(preset, num_labels=2, **kw)
    worst = {}
    for seed, cls in enumerate((AtomBertForPreTraining, AtomBertForSequenceClassification, AtomBertModel)):
        torch.manual_seed(seed)
        m = jitter(cls(cfg).to(DEVICE), seed, std=0.1 if preset == 'tiny' else 0.02)
        for impl in ('sdpa', 'eager'):
            hf = to_hf(m, attn_implementation=impl)
            assert next(hf.parameters()).device.type == DEVICE and hf.config._attn_implementation == impl
            r = compare(m, hf, seed, T=16 if preset == 'tiny' else 128)
            worst[f'{cls.__name__} {impl}'] = max(r.values())
            assert max(r.values()) < tol, (case, cls.__name__, impl, r)
        back = from_hf(hf)            # and back: the same tensors, on the GPU
        assert all(torch.equal(v, m.state_dict()[k]) for k, v in back.state_dict().items())
    REPORT.setdefault('interop_max_abs_diff', {})[case] = worst


# ---------------------------------------------------------------- training runs on CUDA (through `pretrain` and `fit`)

@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    "A small plain-text corpus from the builtin one (Python's documentation): documents separated by blank lines."
    from atombert.corpora import builtin_documents
    path = tmp_path_factory.mktemp('corpus')/'text.txt'
    docs = list(itertools.islice(builtin_documents(), 120))
    path.write_text('\n\n'.join('\n'.join(doc) for doc in docs) + '\n')
    return path


@pytest.fixture(scope='module')
def tokenizer_dir(tmp_path_factory, corpus):
    "One tokenizer for the module, so that runs compared with each other share it exactly."
    from atombert.corpora import load_corpus
    from atombert.tokenizer import train_tokenizer, save_tokenizer
    d = tmp_path_factory.mktemp('tok')
    save_tokenizer(train_tokenizer(load_corpus(str(corpus)).texts(), vocab_size=1000, show_progress=False), d)
    return d


def run_pretrain(out, corpus, tokenizer_dir, **kw):
    from atombert.pretrain import pretrain
    args = dict(preset='tiny', tokenizer=str(tokenizer_dir), seq_len=64, batch_size=8, grad_accum=2, lr=3e-3, seed=3,
                progress=False, cache_dir=str(Path(out).parent/'cache'), max_steps=20, save_every=5, eval_every=0,
                log_every=5, device=DEVICE, precision='fp32')
    return pretrain(str(corpus), str(out), **(args | kw))


def train_rows(run): return [r for r in map(json.loads, (Path(run)/'metrics.jsonl').read_text().splitlines()) if r['split'] == 'train']


def weights(run):
    from safetensors.torch import load_file
    return load_file(Path(run)/'model.safetensors')


def test_bf16_training_on_cuda(tmp_path, corpus, tokenizer_dir):
    "bf16 autocast through `fit`: finite losses that go down, no skipped step, fp32 master weights."
    run_pretrain(tmp_path/'bf16', corpus, tokenizer_dir, precision='bf16', max_steps=40, grad_accum=1, save_every=0)
    rows = train_rows(tmp_path/'bf16')
    losses = [r['mlm_loss'] for r in rows]
    assert json.loads((tmp_path/'bf16'/'run.json').read_text())['args']['precision'] == 'bf16'
    assert all(map(lambda x: x == x and abs(x) < float('inf'), losses)), losses
    assert losses[-1] < losses[0] - 0.1, losses
    assert not any(r.get('skipped_steps') for r in rows)
    assert all(v.dtype == torch.float32 for v in weights(tmp_path/'bf16').values())
    REPORT['bf16_mlm_loss'] = losses


def allow_fp16_on_cpu(monkeypatch):
    "The CPU stand-in for fp16: atombert refuses fp16 autocast on a CPU (no loss scaling needed there), torch has it."
    import atombert.training
    real = atombert.training.autocast_for
    monkeypatch.setattr(atombert.training, 'autocast_for', lambda precision, device:
                        torch.autocast('cpu', torch.float16) if precision == 'fp16' else real(precision, device))


def test_fp16_loss_scaler_skips_and_counts_a_forced_overflow(tmp_path, corpus, tokenizer_dir, monkeypatch):
    if ON_CPU: allow_fp16_on_cpu(monkeypatch)
    from atombert.config import AtomBertConfig
    from atombert.model import AtomBertForPreTraining
    from atombert.measure import pretraining_batch
    from atombert.training import make_optimizer, TrainArgs
    from atombert.training import autocast_for    # as fit sees it: the CPU stand-in patches it there
    # 1. one step by hand, as `fit` does it: the overflowing step leaves every parameter as it was and halves the scale
    torch.manual_seed(0)
    config = AtomBertConfig.preset('tiny', classifier_dropout=0.0)
    model = AtomBertForPreTraining(config).to(DEVICE)
    opt, scaler = make_optimizer(model, TrainArgs()), torch.amp.GradScaler(DEVICE)
    b = pretraining_batch(config, 8, 64, DEVICE)

    def step(factor):
        opt.zero_grad(set_to_none=True)
        with autocast_for('fp16', torch.device(DEVICE)):
            loss = model(b['input_ids'], b['attention_mask'], b['token_type_ids'], labels=b['labels'],
                         sentence_label=b['sentence_label']).loss * factor
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt); scaler.update()
        return gnorm

    for _ in range(3): step(1.0)
    before, scale = {k: v.clone() for k, v in model.state_dict().items()}, scaler.get_scale()
    assert not torch.isfinite(step(1e30))                                   # the forced overflow
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), 'the overflowing step changed parameters'
    assert scaler.get_scale() == scale / 2
    assert torch.isfinite(step(1.0)) and any(not torch.equal(before[k], v) for k, v in model.state_dict().items())

    # 2. through `fit`: the loss of step 6 is forced to overflow; the step is skipped and counted, the scale halved
    from atombert.pretrain import PreTrainingTask
    original, calls, FORCED = PreTrainingTask.loss, [0], 6

    def loss(self, model, batch):
        losses, stats = original(self, model, batch)
        calls[0] += 1
        if calls[0] == FORCED and model.training: losses = {k: v * 1e30 for k, v in losses.items()}
        return losses, stats

    monkeypatch.setattr(PreTrainingTask, 'loss', loss)
    run = tmp_path/'fp16'
    run_pretrain(run, corpus, tokenizer_dir, precision='fp16', max_steps=12, grad_accum=1, log_every=1, save_every=0)
    rows = {r['step']: r for r in train_rows(run)}
    skipped = lambda s: rows[s].get('skipped_steps', 0)
    assert skipped(FORCED) == skipped(FORCED - 1) + 1, [skipped(s) for s in sorted(rows)]
    assert not rows[FORCED]['grad_norm'] < float('inf')
    state = json.loads((run/'checkpoints'/'step-00000012'/'trainer_state.json').read_text())
    scaler_state = torch.load(run/'checkpoints'/'step-00000012'/'trainer_state.pt', weights_only=True)['scaler']
    assert state['skipped_steps'] == skipped(12) >= 1
    # GradScaler halves at every skipped step and grows only after 2000 good ones: its scale counts the skips too
    assert scaler_state['scale'] == 65536.0 * 0.5 ** state['skipped_steps'], (scaler_state, state)
    assert all(torch.isfinite(v).all() for v in weights(run).values())
    assert rows[12]['mlm_loss'] < float('inf')
    REPORT['fp16'] = dict(skipped_steps=state['skipped_steps'], final_scale=scaler_state['scale'], forced_step=FORCED,
                          skipped_by_step=[skipped(s) for s in sorted(rows)])


def test_flash_attention_selected(tmp_path):
    """The model's bf16 training step on CUDA runs a fused flash-style SDPA kernel by default, never the math fallback:
    flash or cuDNN's, whichever PyTorch ranks first on this GPU (torch 2.11 on an H200 picks cuDNN's). Forced to flash
    alone, the step runs flash."""
    from torch.nn.attention import sdpa_kernel, SDPBackend
    from torch.profiler import profile, ProfilerActivity
    import torch.nn.functional as F
    from atombert.config import AtomBertConfig
    from atombert.model import AtomBertForPreTraining
    from atombert.measure import pretraining_batch
    from atombert.devices import autocast_for
    config = AtomBertConfig.preset('atombert-8m')
    model = AtomBertForPreTraining(config).to(DEVICE).train()
    b = pretraining_batch(config, 16, 128, DEVICE)        # an all-ones attention mask: no mask reaches SDPA

    def step():
        with autocast_for('bf16', torch.device(DEVICE)):
            loss = model(b['input_ids'], b['attention_mask'], b['token_type_ids'], labels=b['labels'],
                         sentence_label=b['sentence_label']).loss
        loss.backward()
        if DEVICE == 'cuda': torch.cuda.synchronize()

    def profiled():
        "The SDPA ops and the attention kernels of one step."
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof: step()
        events = prof.key_averages()
        ops = sorted({e.key for e in events if e.key.startswith('aten::') and ('scaled_dot_product' in e.key or 'attention' in e.key)})
        kernels = sorted({e.key[:200] for e in events if 'CUDA' in str(getattr(e, 'device_type', '')) and
                          any(w in e.key.lower() for w in ('flash', 'fmha', 'attention', 'attn', 'sdpa'))})
        return ops, kernels

    suffix = '_for_cpu' if ON_CPU else ''
    fused = {f'aten::_scaled_dot_product_flash_attention{suffix}': 'flash', 'aten::_scaled_dot_product_cudnn_attention': 'cudnn'}
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        step()                                                    # raises "No available kernel" if flash cannot run it
        flash_ops, flash_kernels = profiled()
    step()
    ops, kernels = profiled()
    order = getattr(torch._C, '_get_sdp_priority_order', lambda: [])()
    chosen = sorted(fused[o] for o in ops if o in fused)
    REPORT['attention'] = dict(default_backend=chosen, ops=ops, kernels=kernels[:10], forced_flash_ops=flash_ops,
                               forced_flash_kernels=flash_kernels[:10],
                               priority=[{int(v): k for k, v in SDPBackend.__members__.items()}.get(i, i) for i in order])
    assert len(chosen) == 1 and any(o.startswith(f'aten::_scaled_dot_product_{chosen[0]}_attention') and o.endswith('_backward') for o in ops), ops
    assert not any('math' in o or 'efficient' in o for o in ops), ops              # no fallback, forward or backward
    flash = f'aten::_scaled_dot_product_flash_attention{suffix}'
    assert flash in flash_ops and flash + '_backward' in flash_ops, flash_ops
    if flash_kernels: assert any('flash' in k.lower() for k in flash_kernels), flash_kernels   # the kernels' own names, where recorded

    # the flash kernel computes what the fp32 math kernel computes, to bf16 precision
    g = torch.Generator(device=DEVICE).manual_seed(0)
    q, k, v = (torch.randn(4, 12, 128, 64, device=DEVICE, generator=g) for _ in range(3))
    with sdpa_kernel(SDPBackend.MATH): ref = F.scaled_dot_product_attention(q, k, v)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION): out = F.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    REPORT['attention']['flash_vs_fp32_math_max_abs_diff'] = d = maxdiff(out.float(), ref)
    assert d < 3e-2, d


@pytest.mark.parametrize('token_objective', ['mlm', 'rtd'])
def test_pretraining_step_does_not_wait_for_the_gpu(token_objective):
    """With the masked positions given (as `PreTrainingTask.prepare` gives them) and the batch's attention mask, a bf16 training
    step's forward and backward never make the host wait for the GPU, so it can prepare the next batch meanwhile; ELECTRA's
    step too (the generator samples at the given positions, the discriminator's loss is a masked mean).
    (The H200 run measured 38.2 ms a step end to end against 21.0 ms for the model: the host waited twice a step.)"""
    from atombert.config import AtomBertConfig
    from atombert.model import AtomBertForPreTraining
    from atombert.pretrain import Electra
    from atombert.measure import pretraining_batch
    from atombert.devices import autocast_for
    config = AtomBertConfig.preset('atombert-8m')
    model = (Electra(config) if token_objective == 'rtd' else AtomBertForPreTraining(config)).to(DEVICE).train()
    b = pretraining_batch(config, 16, 128, DEVICE)
    positions = (b['labels'].flatten() != -100).nonzero().squeeze(1)
    sample_u = torch.rand(b['labels'].shape, generator=torch.Generator().manual_seed(0)).to(DEVICE)

    def step():
        with autocast_for('bf16', torch.device(DEVICE)):
            if token_objective == 'rtd':
                loss = model(b['input_ids'], b['attention_mask'], b['token_type_ids'], b['labels'], b['sentence_label'], sample_u,
                             masked_positions=positions).loss
            else:
                loss = model(b['input_ids'], b['attention_mask'], b['token_type_ids'], labels=b['labels'], sentence_label=b['sentence_label'],
                             masked_positions=positions).loss
        loss.backward()
        return loss

    step()                                                  # warm-up: kernel selection may wait
    if DEVICE == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')             # any synchronizing call raises
    try: loss = step()
    finally:
        if DEVICE == 'cuda': torch.cuda.set_sync_debug_mode(0)
    REPORT.setdefault('host_waits', {})[token_objective] = dict(checked=DEVICE == 'cuda', loss=float(loss))
    assert torch.isfinite(loss)


def test_training_batches_come_page_locked():
    """`fit` asks its DataLoader for page-locked batches on CUDA: a copy from pageable memory makes the host wait for the
    device before it starts, every step. (On the CPU stand-in there is nothing to pin: the batches stay as they are.)"""
    from atombert.training import TrainArgs, micro_batches
    data = [torch.arange(8) + i for i in range(32)]
    collate = lambda rows: {'input_ids': torch.stack(rows)}
    for workers in (0, 2):
        _, _, b = next(micro_batches(data, collate, TrainArgs(batch_size=4, num_workers=workers), pin_memory=DEVICE == 'cuda'))
        assert b['input_ids'].is_pinned() == (DEVICE == 'cuda'), workers
    REPORT['pinned_batches'] = DEVICE == 'cuda'


def test_compiled_training_step_equals_eager():
    "A `torch.compile`d model's training step (loss, gradients, AdamW update) equals the eager one's, fp32."
    import copy
    from atombert.config import AtomBertConfig
    from atombert.model import AtomBertForPreTraining
    from atombert.measure import pretraining_batch
    from atombert.training import make_optimizer, TrainArgs
    torch._dynamo.reset()
    torch.manual_seed(0)
    config = AtomBertConfig.preset('tiny', classifier_dropout=0.0)
    eager = AtomBertForPreTraining(config).to(DEVICE).train()
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin)
    opts = make_optimizer(eager, TrainArgs()), make_optimizer(twin, TrainArgs())
    b = pretraining_batch(config, 8, 64, DEVICE)
    diffs = []
    for _ in range(3):
        losses = []
        for run, opt in ((eager, opts[0]), (compiled, opts[1])):
            opt.zero_grad(set_to_none=True)
            loss = run(b['input_ids'], b['attention_mask'], b['token_type_ids'], labels=b['labels'],
                       sentence_label=b['sentence_label']).loss
            loss.backward()
            losses.append(loss.detach())
        ge, gc = dict(eager.named_parameters()), dict(twin.named_parameters())
        grad = max(maxdiff(ge[k].grad, gc[k].grad) for k in ge if ge[k].grad is not None)
        diffs.append(dict(loss=maxdiff(*losses), grad=grad))
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
        for k in ge:
            if ge[k].grad is not None: torch.testing.assert_close(gc[k].grad, ge[k].grad, rtol=1e-4, atol=1e-5, msg=k)
        for opt in opts: opt.step()
    param = max(maxdiff(p, q) for p, q in zip(eager.parameters(), twin.parameters()))
    REPORT['compile'] = dict(steps=diffs, param_max_abs_diff_after=param)
    assert param < 1e-4, param


def test_checkpoint_and_exact_resume_on_cuda(tmp_path, corpus, tokenizer_dir, monkeypatch):
    """A run that crashes mid-step (2 micro-batches a step) and is resumed from its last checkpoint ends with the
    uninterrupted run's weights, bit for bit. Deterministic kernels: fp32 and `torch.use_deterministic_algorithms(True)`,
    strict (with warn_only=True the flash and memory-efficient attention backward stay non-deterministic). Should an op
    of the step have no deterministic CUDA kernel (strict mode raises), the runs are repeated with warn_only=True and
    the resumed run may differ from the straight one by no more than two straight runs differ from each other."""
    from atombert.pretrain import PreTrainingTask
    from atombert.trainer_state import checkpoints
    original = PreTrainingTask.loss

    def three_runs(d):
        "The straight run twice (are the kernels deterministic?), and a run that crashes, then resumes."
        run_pretrain(d/'straight', corpus, tokenizer_dir)
        run_pretrain(d/'again', corpus, tokenizer_dir)
        calls = [0]

        def crashing(self, model, batch):
            calls[0] += 1
            if calls[0] == 25: raise RuntimeError('injected crash')   # step 13, first micro-batch: after checkpoint 10
            return original(self, model, batch)

        monkeypatch.setattr(PreTrainingTask, 'loss', crashing)
        try:
            with pytest.raises(RuntimeError, match='injected crash'): run_pretrain(d/'run', corpus, tokenizer_dir)
        finally: monkeypatch.setattr(PreTrainingTask, 'loss', original)
        assert [c.name for c in checkpoints(d/'run')] == ['step-00000005', 'step-00000010']
        assert not (d/'run'/'model.safetensors').exists()
        run_pretrain(d/'run', corpus, tokenizer_dir, resume=True)
        return d

    strict_error = None
    try:
        torch.use_deterministic_algorithms(True)
        try: d = three_runs(tmp_path/'strict')
        except RuntimeError as e:
            if 'deterministic' not in str(e): raise
            strict_error = str(e).splitlines()[0][:300]
            torch.use_deterministic_algorithms(True, warn_only=True)
            d = three_runs(tmp_path/'warn_only')
    finally: torch.use_deterministic_algorithms(False)
    a, again, b = weights(d/'straight'), weights(d/'again'), weights(d/'run')
    assert a.keys() == b.keys()
    rerun = max(maxdiff(a[k], again[k]) for k in a)
    resumed = max(maxdiff(a[k], b[k]) for k in a)
    bitwise = all(torch.equal(a[k], b[k]) for k in a)
    REPORT['resume'] = dict(mode='strict' if strict_error is None else 'warn_only', strict_error=strict_error, bitwise=bitwise,
                            resumed_vs_straight_max_abs_diff=resumed, straight_vs_straight_max_abs_diff=rerun)
    if strict_error is None or rerun == 0:
        assert bitwise, f'resumed weights differ from the uninterrupted run by {resumed:.3g} (two straight runs differ by {rerun:.3g})'
    else: assert resumed <= 10 * rerun, (resumed, rerun, strict_error)
    steps = [r['step'] for r in map(json.loads, (d/'run'/'metrics.jsonl').read_text().splitlines())]
    assert steps == sorted(set(steps))                   # no step logged twice after resuming
    assert json.loads((d/'run'/'run.json').read_text())['args']['device'] == DEVICE

"""Writes tests/formats/v1: a pretraining directory and a finetuned directory saved by atombert before the redesign
(commit 3fbdca1), and what that code computed on them, so that later code can be checked to load them unchanged."""
import json, sys, warnings
from pathlib import Path
import torch
from atombert.config import AtomBertConfig
from atombert.model import AtomBertForPreTraining
from atombert.tokenizer import train_tokenizer
from atombert.mnli import load_mnli, finetune, load_finetuned, predict
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
train = load_mnli('builtin', 'train').select(range(256)); dev = load_mnli('builtin', 'validation_matched').select(range(16))
tok = train_tokenizer(list(train['premise']) + list(train['hypothesis']), vocab_size=120, max_length=64, show_progress=False)
torch.manual_seed(0)
config = AtomBertConfig.preset('tiny', vocab_size=tok.get_vocab_size(), hidden_size=32, embedding_size=16, intermediate_size=64,
                               num_heads=2, max_position_embeddings=64)
pre = AtomBertForPreTraining(config).eval()
pre.save_pretrained(out/'pretrained', tokenizer=tok)
with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    finetune(out/'pretrained', train, None, out/'finetuned', max_steps=4, batch_size=32, lr=1e-3, progress=False)
import shutil
for d in ('checkpoints',): shutil.rmtree(out/'finetuned'/d, ignore_errors=True)
ids = torch.tensor([tok.encode(p, h).ids[:32] + [0] * (32 - len(tok.encode(p, h).ids[:32])) for p, h in zip(dev['premise'][:4], dev['hypothesis'][:4])])
with torch.no_grad(): mlm = pre(ids, attention_mask=(ids != 0).long()).mlm_logits
model, ftok = load_finetuned(out/'finetuned')
logits = predict(model, ftok, dev)
(out/'expected.json').write_text(json.dumps(dict(written_by='atombert 3fbdca1 (before the one-job-per-module redesign)',
    input_ids=ids.tolist(), mlm_logits_sum=float(mlm.double().sum()), mlm_logits_first=mlm[0, :3, :5].tolist(),
    dev_pairs=[dict(premise=p, hypothesis=h) for p, h in zip(dev['premise'], dev['hypothesis'])],
    classifier_logits=logits.tolist()), indent=1))
print(sorted(str(p.relative_to(out)) for p in out.rglob('*') if p.is_file()))

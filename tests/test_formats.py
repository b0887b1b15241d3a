"""Model directories written by atombert before the one-job-per-module redesign load with today's code and compute what
that code computed on them. `tests/formats/v1` was written by commit 3fbdca1 with `tests/formats/make_v1.py` (a tiny
pretraining directory, the same finetuned for 4 steps on the builtin NLI set, and their outputs in `expected.json`)."""
import json
from pathlib import Path

import torch
from datasets import Dataset

from atombert.evaluation import load_finetuned, predict
from atombert.model import AtomBertForPreTraining

V1 = Path(__file__).resolve().parent/'formats'/'v1'
EXPECTED = json.loads((V1/'expected.json').read_text())


def test_a_pretraining_directory_of_v1_loads_unchanged():
    model = AtomBertForPreTraining.from_pretrained(V1/'pretrained').eval()
    ids = torch.tensor(EXPECTED['input_ids'])
    with torch.no_grad(): mlm = model(ids, attention_mask=(ids != 0).long()).mlm_logits
    torch.testing.assert_close(mlm[0, :3, :5], torch.tensor(EXPECTED['mlm_logits_first']), rtol=0, atol=1e-6)
    assert abs(float(mlm.double().sum()) - EXPECTED['mlm_logits_sum']) < 1e-3 * max(1, abs(EXPECTED['mlm_logits_sum']))


def test_a_finetuned_directory_of_v1_loads_unchanged():
    model, tokenizer = load_finetuned(V1/'finetuned')
    logits = predict(model, tokenizer, Dataset.from_list([dict(pair, label=-1) for pair in EXPECTED['dev_pairs']]))
    torch.testing.assert_close(logits.float(), torch.tensor(EXPECTED['classifier_logits']), rtol=0, atol=1e-5)
    assert model.config.num_labels == 3

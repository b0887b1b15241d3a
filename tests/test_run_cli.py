"""`atombert run` resumed: the pretraining a finetuning was made from is never changed under it (a resume with another
pretraining length is refused before anything is written, and the same length resumes)."""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('ATOMBERT_SHARED_DATA', ROOT.parent/'shared'/'data'))
ATOMBERT = str(Path(sys.executable).parent/'atombert')
ENV = {**os.environ, 'HF_DATASETS_OFFLINE': '1', 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'OMP_NUM_THREADS': '1'}


def test_a_resume_never_changes_the_pretraining_mnli_was_finetuned_from(tmp_path):
    (tmp_path/'mnli').mkdir()
    (tmp_path/'mnli'/'train.tsv').write_text(''.join((SHARED/'mnli'/'train_sample_20k_ptbtok.tsv').read_text().splitlines(True)[:161]))
    for s in ('matched', 'mismatched'):
        (tmp_path/'mnli'/f'dev_{s}.jsonl').write_text(''.join((SHARED/'mnli'/f'dev_{s}.jsonl').read_text().splitlines(True)[:48]))
    (tmp_path/'corpus.txt').write_text((SHARED/'wikitext'/'wikitext-2-raw'/'wiki.valid.raw').read_text()[:60_000])
    run = lambda steps, *extra: subprocess.run(
        [ATOMBERT, 'run', '--corpus', tmp_path/'corpus.txt', '--mnli', tmp_path/'mnli', '--preset', 'tiny', '--vocab-size', '200',
         '--seq-len', '32', '--batch-size', '8', '--finetune-epochs', '1', '--pretrain-steps', str(steps), '--out', tmp_path/'r',
         '--no-progress', *extra], capture_output=True, text=True, env=ENV, cwd=ROOT)
    first = run(3)
    assert first.returncode == 0, first.stderr[-3000:]
    weights = (tmp_path/'r'/'pretrain'/'model.safetensors').read_bytes()
    longer = run(4, '--resume')
    assert longer.returncode == 1 and longer.stderr.count('\n') == 1, longer.stderr[-3000:]
    assert 'mnli/ was finetuned from 3 steps of pretraining, and 4 would overwrite those weights' in longer.stderr
    assert (tmp_path/'r'/'pretrain'/'model.safetensors').read_bytes() == weights
    assert json.loads((tmp_path/'r'/'pretrain'/'run.json').read_text())['args']['max_steps'] == 3
    same = run(3, '--resume')
    assert same.returncode == 0, same.stderr[-3000:]

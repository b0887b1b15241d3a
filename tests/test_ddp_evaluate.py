"""`held_out_metrics` under torchrun when a process gets no held-out batch (fewer batches than processes): every process
must still take part in the reduction with the same tensor, and the result must equal one process's."""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false'}

SCRIPT = '''
import json, os, sys, torch
from atombert.config import AtomBertConfig
from atombert.model import AtomBertForPreTraining
from atombert.masking import MaskingCollator
from atombert.pretrain import PreTrainingTask
from atombert.training import held_out_metrics
from atombert.devices import init_distributed
rank, world, device = init_distributed('cpu')
torch.manual_seed(0)
model = AtomBertForPreTraining(AtomBertConfig.preset('tiny', sentence_objective='none'))
collate = MaskingCollator({'pad': 0, 'unk': 1, 'cls': 2, 'sep': 3, 'mask': 4}, vocab_size=1000, seed=0)
data = [{'input_ids': torch.arange(5, 37), 'seed': i} for i in range(int(sys.argv[2]))]
m = held_out_metrics(model, data, collate, PreTrainingTask('none', torch.log_softmax(torch.ones(1000), 0)), batch_size=4, rank=rank, world=world)
if rank == 0: open(sys.argv[1], 'w').write(json.dumps(m))
'''

def test_a_process_without_batches(tmp_path):
    script = tmp_path/'ev.py'; script.write_text(SCRIPT)
    one = subprocess.run([sys.executable, str(script), str(tmp_path/'one.json'), '1'], env=ENV, cwd=ROOT, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', str(script),
                          str(tmp_path/'two.json'), '1'], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]         # it used to hang or fail in all_reduce
    a, b = (json.loads((tmp_path/f).read_text()) for f in ('one.json', 'two.json'))
    assert a.keys() == b.keys() and {'mlm_loss', 'mlm_accuracy', 'unigram_loss', 'unigram_accuracy'} <= a.keys()
    assert all(abs(a[k] - b[k]) < 1e-6 for k in a), (a, b)

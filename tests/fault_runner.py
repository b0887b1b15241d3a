"""Runs `atombert ARGS...` with a fault injected into its file writes (used by test_faults.py).

ATOMBERT_FAULT says which write fails and how, e.g. `kill:safetensors:2` (the 2nd `model.safetensors` write is
cut in half and the process SIGKILLs itself: a crash in the middle of a checkpoint), `kill:torch:3` (the same
for the 3rd `trainer_state.pt`), `enospc:torch:2` (the 2nd `trainer_state.pt` write fails: a full disk),
`kill:loss:7` (SIGKILL at the 7th loss computation: anywhere in a step, between micro-batches too).
"""
import errno, os, signal, sys

import torch
import atombert.checkpoint, atombert.finetuning, atombert.pretrain

mode, target, nth = os.environ['ATOMBERT_FAULT'].split(':')
calls = 0


def faulty(write):
    def wrapper(obj, path, *args, **kwargs):
        global calls
        calls += 1
        if calls != int(nth): return write(obj, path, *args, **kwargs)
        if mode == 'enospc': raise OSError(errno.ENOSPC, 'No space left on device')
        write(obj, path, *args, **kwargs)                   # a half-written file, then the crash
        with open(path, 'r+b') as f: f.truncate(os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return wrapper


def dying(loss):
    def wrapper(self, model, batch):
        global calls
        calls += 1
        if calls == int(nth): os.kill(os.getpid(), signal.SIGKILL)
        return loss(self, model, batch)
    return wrapper


if target == 'safetensors': atombert.checkpoint.save_file = faulty(atombert.checkpoint.save_file)
elif target == 'torch': torch.save = faulty(torch.save)
else:
    for task in (atombert.pretrain.PreTrainingTask, atombert.pretrain.RTDTask, atombert.finetuning.ClassificationTask): task.loss = dying(task.loss)

from atombert.cli import main
main(sys.argv[1:])

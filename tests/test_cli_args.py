"""`atombert` flags: a wrong type or an out-of-range value is a one-line usage error with exit code 2, for every flag of every command."""
import ast, re
import dataclasses, inspect, json, os, subprocess, sys
from pathlib import Path

import pytest
from unittest import mock

from atombert.cli import COMMANDS, FREE, LIMITS, NOT_FLAGS, PYTHON_ONLY, TRAIN_DEFAULTS, command_parser, flags_of, limit_of, main
from atombert.training import TrainArgs

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'HF_DATASETS_OFFLINE': '1', 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'OMP_NUM_THREADS': '1'}
ATOMBERT = str(Path(sys.executable).parent/'atombert')     # the installed console script


def valued_flags(command):
    "(flag, name, type) of each flag of `command` that takes a value, from `flags_of` (what `command_parser` is built from)."
    kinds = {name: (float if kind == float | None else str if kind == str | None else kind) for name, (_, kind, _) in flags_of(command).items()}
    return [('--' + name.replace('_', '-'), name, kind) for name, kind in kinds.items() if kind is not bool]


FLAGS = [(c, *f) for c in COMMANDS for f in valued_flags(c)]
NUMBERS = [(c, flag, kind) for c, flag, _, kind in FLAGS if kind in (int, float)]
# Values outside each limit, read off what the limit tells the user (`says`): the shapes `settings` builds, then the
# limits written by hand, by what they say. A limit that says something new fails here until it has its values.
WRITTEN = {"0 (the tokenizer's own) or >= 5": (-1, 4), '> 0, or 0 with --max-steps': (-0.5,), '>= 0 (0: by model width)': (-1e-4,), 'in (0, 1]': (0, 1.5),
           'in (0, 1)': (0, 1), "cpu, cuda or cuda:N ('': cuda when available)": ('gpu', 'cuda:x'),
           'a JSON object, e.g. {"norm": "pre"}': ('{norm', '[1]')}

def counterexamples(limit) -> tuple:
    "Values that `limit` says it refuses."
    n = lambda text: ast.literal_eval(text)          # an int stays an int: a flag of type int must get one
    says = limit.says
    if m := re.fullmatch(r'>= (\S+)', says): return (n(m[1]) - 1,)
    if m := re.fullmatch(r'> (\S+)', says): return (n(m[1]), n(m[1]) - 1)
    if m := re.fullmatch(r'in \[(\S+), (\S+)([\])])', says): return (n(m[1]) - 1, n(m[2]) if m[3] == ')' else n(m[2]) + 1)
    if says.startswith('one of '): return ('nope',)
    if says.startswith(('all, or comma-separated', 'comma-separated')): return ('nope', 'train,nope' if 'MNLI' in says else 'cola,nope', ',')
    return WRITTEN[says]

REFUSED = [(c, flag, str(bad)) for c, flag, name, _ in FLAGS if (limit := limit_of(c, name)) for bad in counterexamples(limit)]


def test_counterexamples_are_refused_by_the_limit_itself():
    "What the limits say matches what they check (the values the command line test below passes are refused)."
    for c, flag, name, kind in FLAGS:
        if (limit := limit_of(c, name)) is None: continue
        for bad in counterexamples(limit):
            assert not limit.ok(bad), (c, flag, limit, bad)


def usage_error(capsys, *argv):
    "Run `main(argv)` in-process; it must be a usage error: exit 2, nothing on stdout, one line on stderr naming the flag."
    with pytest.raises(SystemExit) as e: main(argv)
    out, err = capsys.readouterr()
    assert (e.value.code, out, err.count('\n')) == (2, '', 1), (e.value.code, out, err)
    assert err.startswith(f'atombert {argv[0]}: error: argument {argv[1]}: ') and err.endswith(f'; see atombert {argv[0]} --help\n'), err
    return err


@pytest.mark.parametrize('command,flag,name,kind', FLAGS, ids=[f'{c} {f}' for c, f, *_ in FLAGS])
def test_every_number_and_choice_has_limits(command, flag, name, kind):
    limit = limit_of(command, name)
    assert (limit is None) == (name in FREE), f'{command} {flag}: give {name!r} an entry in LIMITS, or in FREE if it is a path or name'
    if kind in (int, float): assert limit is not None, f'{command} {flag} is a number: it needs an entry in LIMITS'


def test_no_entry_for_a_flag_that_is_gone():
    names = {n for _, _, n, _ in FLAGS} | {(c, n) for c, _, n, _ in FLAGS}
    assert set(LIMITS) - names == set()
    assert FREE - names == set()


@pytest.mark.parametrize('command,flag,kind', NUMBERS, ids=[f'{c} {f}' for c, f, _ in NUMBERS])
def test_not_a_number(capsys, command, flag, kind):
    assert f"invalid {kind.__name__} value: 'many'" in usage_error(capsys, command, flag, 'many')
    if kind is int: assert "invalid int value: '2.5'" in usage_error(capsys, command, flag, '2.5')
    else:
        for text in ('nan', 'inf', '1e999'): assert 'must be a finite number' in usage_error(capsys, command, flag, text)


@pytest.mark.parametrize('command,flag,value', REFUSED, ids=[f'{c} {f} {v}' for c, f, v in REFUSED])
def test_out_of_range(capsys, command, flag, value):
    assert f'invalid value {value!r} (must be ' in usage_error(capsys, command, flag, value)


@pytest.mark.parametrize('argv,says', [
    (['pretrain', '--batch-size', '0'], '>= 1'), (['pretrain', '--lr', '-1'], '> 0'), (['info', '--seq-len', '0'], '>= 8'),
    (['pretrain', '--precision', 'fp8'], 'one of auto, fp32, bf16, fp16'), (['pretrain', '--objective', 'foo'], 'one of sop, nsp, none'),
    (['info', '--preset', 'nope'], 'one of tiny, small'), (['pretrain', '--schedule', 'x'], 'one of linear, onecycle, constant'),
    (['finetune', '--alpha', '1.5'], 'in [0, 1]'), (['pretrain', '--dropout', '1'], 'in [0, 1)'), (['pretrain', '--warmup', '-1'], '>= 0'),
    (['pretrain', '--tokenizer-kind', 'bpe'], 'one of wordpiece, unigram'), (['finetune', '--temperature', '0'], '> 0'),
    (['run', '--vocab-size', '3'], '>= 6'), (['pretrain', '--grad-accum', '0'], '>= 1'), (['finetune', '--max-steps', '-5'], '>= 0'),
    (['pretrain', '--max-steps', '0'], '>= 1'), (['finetune', '--epochs', '-1'], '> 0, or 0 with --max-steps'), (['pretrain', '--eval-every', '-1'], '>= 0'),
    (['pretrain', '--num-workers', '-1'], '>= 0'), (['pretrain', '--seed', '-1'], 'in [0, 4294967295]'),
    (['evaluate', '--splits', 'validation_matched,nope'], 'comma-separated MNLI splits'), (['pretrain', '--device', 'gpu'], 'cpu, cuda'),
    (['run', '--config-overrides', '{norm: pre}'], 'a JSON object'), (['finetune', '--max-length', '3'], "0 (the tokenizer's own) or >= 5"),
    (['finetune', '--task', 'squad'], 'one of cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli'), (['pretrain', '--batch_size', '0'], '>= 1'),   # the underscore spelling too
])
def test_the_issue_examples(capsys, argv, says):
    flag = argv[1].replace('_', '-')
    with pytest.raises(SystemExit) as e: main(argv)
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == '' and err.count('\n') == 1, err
    assert f'argument {flag}: invalid value {argv[2]!r} (must be {says}' in err


@pytest.mark.parametrize('command', COMMANDS)
def test_defaults_pass_their_own_limits(command):
    "Parsing nothing gives the function's own defaults and no training setting; those --help shows are the command's (else fit's), all valid."
    args = vars(command_parser(command).parse_args([]))
    own = {k: p.default for k, p in inspect.signature(COMMANDS[command]).parameters.items()
           if p.kind is not p.VAR_KEYWORD and k not in PYTHON_ONLY}
    assert args == own                                    # a training setting reaches the command only when given
    train = {k: default for k, (_, _, default) in flags_of(command).items() if k not in own}
    fields = {f.name: f.default for f in dataclasses.fields(TrainArgs)}
    assert train == {k: TRAIN_DEFAULTS.get(command, {}).get(k, fields[k]) for k in train}
    if train:
        assert set(fields) - set(train) - set(own) == {'out_dir', 'betas', *NOT_FLAGS.get(command, ())}   # every other field is a flag
        TrainArgs(**train)                                                                        # within their limits


FLAGS_BEFORE = json.loads((ROOT/'tests'/'cli_flags.json').read_text())   # every flag and default before the flags came from TrainArgs


@pytest.mark.parametrize('command', COMMANDS)
def test_every_flag_and_default_kept(command):
    parser = command_parser(command)
    for flag, default in FLAGS_BEFORE[command].items():
        action = parser._option_string_actions.get(flag)
        assert action is not None, f'{command} {flag} is gone'
        assert flags_of(command)[action.dest][2] == default, (command, flag, flags_of(command)[action.dest][2], default)   # as --help shows it


@pytest.mark.parametrize('command,argv,expected', [
    ('pretrain', '--dropout 0 --warmup 0 --seed 0 --device cuda:1 --max-steps 1 --objective none --vocab-size 6 --seq-len 8',
     dict(dropout=0., warmup=0., seed=0, device='cuda:1', max_steps=1, objective='none', vocab_size=6, seq_len=8)),
    ('pretrain', '--seed 4294967295 --device cpu --precision bf16 --schedule onecycle --tokenizer-kind unigram --epochs 0.5',
     dict(seed=2**32 - 1, device='cpu', precision='bf16', schedule='onecycle', tokenizer_kind='unigram', epochs=0.5)),
    ('finetune', '--alpha 1 --max-length 0 --max-steps 0 --temperature 0.5 --epochs 0',
     dict(alpha=1., max_length=0, max_steps=0, temperature=0.5, epochs=0.)),
    ('evaluate', '--splits test_matched,validation_mismatched --batch-size 1', dict(splits='test_matched,validation_mismatched', batch_size=1)),
    ('run', '--pretrain-steps 0 --finetune-epochs 0.1 --finetune-lr 1e-5 --preset tiny',
     dict(pretrain_steps=0, finetune_epochs=0.1, finetune_lr=1e-5, preset='tiny')),
    ('info', '--preset bert-base --batch-size 1 --seq-len 8', dict(preset='bert-base', batch_size=1, seq_len=8)),
])
def test_valid_values_parse(command, argv, expected):
    args = vars(command_parser(command).parse_args(argv.split()))
    assert {k: args[k] for k in expected} == expected
    assert command_parser('run').parse_args(['--config-overrides', '{"norm": "pre"}']).config_overrides == '{"norm": "pre"}'


def test_unknown_flag_or_command_is_one_line(capsys):
    with pytest.raises(SystemExit) as e: main(['pretrain', '--bogus', '--lr', '1'])
    assert e.value.code == 2 and capsys.readouterr().err == \
        'atombert pretrain: error: unrecognized arguments: --bogus; see atombert pretrain --help\n'
    with pytest.raises(SystemExit) as e: main(['pretrain', '--lr'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and 'argument --lr: expected one argument' in err
    with pytest.raises(SystemExit) as e: main(['frobnicate'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and "unknown command 'frobnicate'" in err


@pytest.mark.parametrize('command', COMMANDS)
def test_help_still_works(capsys, command):
    with pytest.raises(SystemExit) as e: main([command, '--help'])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith(f'usage: atombert {command}') and '--batch-size' in out and '[>= 1]' in out


def test_an_invalid_flag_stops_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e: main(['info', '--preset', 'tiny', '--batch-size', '0'])
    assert e.value.code == 2 and capsys.readouterr().out == ''          # info prints before anything else
    # run --demo would first load the NLI set, then pretrain for minutes: it must not start
    with pytest.raises(SystemExit) as e: main(['run', '--demo', '--out', str(tmp_path/'run'), '--seed', '-1', '--no-progress'])
    assert e.value.code == 2 and capsys.readouterr().out == '' and not (tmp_path/'run').exists()
    with pytest.raises(SystemExit) as e: main(['pretrain', '--corpus', 'builtin', '--preset', 'tiny', '--max-steps', '2',
                                              '--out', str(tmp_path/'pre'), '--no-progress', '--num-workers', '-1'])
    assert e.value.code == 2 and not (tmp_path/'pre').exists() and list(tmp_path.iterdir()) == []


def atombert(launcher, *args):
    return subprocess.run([*launcher, *args], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)


@pytest.mark.parametrize('launcher', [[ATOMBERT], [sys.executable, '-m', 'atombert.cli']], ids=['console script', 'python -m'])
def test_the_command_line(launcher, tmp_path):
    r = atombert(launcher, 'pretrain', '--batch-size', '0', '--out', str(tmp_path/'run'))
    assert (r.returncode, r.stdout, r.stderr) == \
        (2, '', "atombert pretrain: error: argument --batch-size: invalid value '0' (must be >= 1); see atombert pretrain --help\n")
    assert not (tmp_path/'run').exists()
    r = atombert(launcher, 'info', '--preset', 'tiny', '--seq-len', '16', '--batch-size', '1')
    assert r.returncode == 0 and 'tokens/s' in r.stdout, r.stderr


def test_runtime_errors_stay_exit_1(tmp_path):
    "A value that is well-formed but wrong for this run (a missing file) is known only when running: exit 1, one line."
    r = atombert([ATOMBERT], 'pretrain', '--corpus', str(tmp_path/'nope.txt'), '--preset', 'tiny', '--out', str(tmp_path/'run'))
    assert r.returncode == 1 and r.stderr.startswith('atombert: error: ') and r.stderr.count('\n') == 1, r.stderr


def test_a_missing_model_is_named_before_the_data(tmp_path):
    "`finetune --model MISSING` with the data at its default (the hub): the error is about the model, not the hub's data."
    r = atombert([ATOMBERT], 'finetune', '--model', str(tmp_path/'no-model'), '--out', str(tmp_path/'run'))
    assert r.returncode == 1 and r.stderr.count('\n') == 1, r.stderr
    assert f"no model directory {str(tmp_path/'no-model')!r}" in r.stderr and 'MNLI' not in r.stderr, r.stderr
    assert not (tmp_path/'run').exists()


def test_demo_keeps_the_flags_given_beside_it(tmp_path):
    "run --demo sets the embedded default's settings, except those a flag gave (they were silently replaced)."
    seen = {}
    class Stop(Exception): pass
    def capture(corpus, out, preset, **kw): seen.update(corpus=corpus, preset=preset, **kw); raise Stop
    with mock.patch('atombert.commands.pretrain', capture), pytest.raises(Stop):
        main(['run', '--demo', '--preset', 'tiny', '--lr', '3e-4', '--out', str(tmp_path/'demo'), '--no-progress'])
    assert (seen['corpus'], seen['preset'], seen['lr'], seen['batch_size'], seen['seq_len']) == ('builtin', 'tiny', 3e-4, 64, 64)


@pytest.mark.parametrize('argv', [['finetune', '--task', 'SST-2'], ['glue', '--tasks', 'rte, MRPC']])
def test_task_names_as_glue_reads_them(argv):
    "Case, dashes and spaces as `glue_task` takes them: the flag check agrees with the command."
    args = vars(command_parser(argv[0]).parse_args(argv[1:]))
    assert args[argv[1][2:]] == argv[2]

"""The boundaries of ../shared/DESIGN.md, checked on the exported modules' import statements (issue 14):
the model imports no training, tokenizer or file-format code; the loop imports no model and no tokenizer; only the
interop module imports transformers; no module imports another's private name; one atomic-write helper."""
import ast, subprocess, sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / 'atombert'
MODULES = sorted(p.stem for p in PKG.glob('*.py') if not p.stem.startswith('_'))


def imports(module: str) -> list[tuple[str, list[str]]]:
    "(imported module, names) for every import statement in atombert/<module>.py, at any depth (lazy imports too)."
    out = []
    for node in ast.walk(ast.parse((PKG / f'{module}.py').read_text())):
        if isinstance(node, ast.Import): out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            name = ('atombert.' + (node.module or '')) if node.level else node.module
            out.append((name.rstrip('.'), [a.name for a in node.names]))
    return out


def atombert_imports(module: str) -> set[str]:
    return {m.removeprefix('atombert.') for m, _ in imports(module) if m.startswith('atombert.')}


def test_the_model_is_only_the_model():
    # not even lazily: checkpoint builds on the model and gives its classes save_pretrained / from_pretrained
    assert atombert_imports('model') == {'config', 'embeddings', 'encoder'}


def test_no_import_circle():
    "Every import between atombert's modules, lazy ones included, points one way: a topological order exists."
    graph = {m: atombert_imports(m) & set(MODULES) for m in MODULES}
    done, visiting = set(), []
    def visit(m):
        if m in done: return
        assert m not in visiting, 'import circle: ' + ' -> '.join(visiting[visiting.index(m):] + [m])
        visiting.append(m)
        for n in sorted(graph[m]): visit(n)
        visiting.pop(); done.add(m)
    for m in MODULES: visit(m)


def test_model_classes_load_and_save_whatever_is_imported_first():
    "A process that imports only `atombert.model` still finds the methods `checkpoint` gives the model classes."
    code = ('from atombert.model import AtomBertModel, PretrainedModel; import sys; '
            'assert "atombert.checkpoint" in sys.modules; '
            'assert all(hasattr(PretrainedModel, n) for n in ("save_pretrained", "from_pretrained", "checkpoint_state")); '
            'assert AtomBertModel.from_pretrained.__self__ is AtomBertModel')
    subprocess.run([sys.executable, '-c', code], check=True)


def test_the_loop_imports_neither_model_nor_tokenizer():
    assert not atombert_imports('training') & {'model', 'tokenizer', 'mnli', 'evaluation', 'finetuning', 'pretrain', 'hf'}


def test_only_interop_imports_transformers():
    users = {m for m in MODULES if any(name.split('.')[0] == 'transformers' for name, _ in imports(m))}
    assert users <= {'hf'}, users


@pytest.mark.parametrize('module', MODULES)
def test_no_private_names_across_modules(module):
    private = [(m, n) for m, names in imports(module) if m.startswith('atombert') for n in names
               if n.startswith('_') and not n.startswith('__')]
    assert not private, f'{module} imports private names {private}'


def test_one_atomic_write():
    # every module writes through atombert.files: none renames a temporary file of its own
    for module in MODULES:
        if module == 'files': continue
        text = (PKG / f'{module}.py').read_text()
        assert 'os.replace(' not in text and 'os.rename(' not in text, f'{module} renames files itself'


# the module table in DEVELOPING.md ("Architecture"): a new import between modules must be a decision, made here too
ALLOWED = {
    'cli': {'commands', 'pretrain', 'glue', 'mnli', 'training', 'settings'},
    'commands': {'pretrain', 'finetuning', 'evaluation', 'glue', 'mnli', 'trainer_state', 'logs', 'checkpoint', 'model', 'config', 'files'},
    'pretrain': {'budget', 'training', 'trainer_state', 'devices', 'corpora', 'data', 'masking', 'checkpoint', 'model', 'tokenizer', 'config', 'settings', 'files'},
    'finetuning': {'evaluation', 'glue', 'mnli', 'batches', 'training', 'trainer_state', 'checkpoint', 'model', 'config'},
    'evaluation': {'glue', 'mnli', 'batches', 'checkpoint', 'model', 'tokenizer', 'files'},
    'mnli': {'batches', 'files'},
    'batches': {'tokenizer'},
    'glue': {'files'},
    'training': {'devices', 'trainer_state', 'logs', 'settings', 'files'},
    'budget': {'training', 'devices'},
    'trainer_state': {'checkpoint', 'albert', 'files'},
    'devices': set(), 'logs': {'files'},
    'data': {'corpora', 'tokenizer', 'config', 'files'},
    'masking': {'data', 'tokenizer'},
    'corpora': {'tokenizer', 'files'},
    'hf': {'albert', 'model', 'config'},
    'checkpoint': {'albert', 'model', 'tokenizer', 'config', 'files'},
    'albert': {'model', 'config'},
    'model': {'encoder', 'embeddings', 'config'},
    'measure': {'tokenizer'},
    'tokenizer': {'files'},
    'files': set(), 'settings': set(),
    'encoder': {'config'}, 'embeddings': {'config'}, 'config': {'settings', 'files'},
}


@pytest.mark.parametrize('module', MODULES)
def test_imports_match_the_architecture_table(module):
    assert module in ALLOWED, f'atombert.{module} is new: add it to the architecture table (DEVELOPING.md) and ALLOWED'
    assert atombert_imports(module) <= ALLOWED[module], f'{module} imports {atombert_imports(module) - ALLOWED[module]}'

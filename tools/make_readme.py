"""Write README.md from nbs/index.ipynb without Quarto (nbdev_readme needs it).

Cells with `#| hide` or `#| export` are dropped, `#|` directive lines are stripped, `#| echo: false` cells keep
only their output, and the notebook's title block becomes the README's heading. `--check` exits 1 when
README.md is out of date.
"""
import re, sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parents[1]

def readme_text() -> str:
    nb = nbformat.read(ROOT/'nbs'/'index.ipynb', as_version=4)
    cells = []
    for cell in nb.cells:
        lines = cell.source.splitlines()
        directives = [l.strip() for l in lines if l.startswith('#|')]
        if any(d.startswith(('#| hide', '#|hide', '#| export', '#|export', '#| default_exp', '#|default_exp')) for d in directives): continue
        cell.source = '\n'.join(l for l in lines if not l.startswith('#|'))
        if cell.cell_type == 'code' and any(d.replace(' ', '') == '#|echo:false' for d in directives):
            cell.source = ''
            cell.metadata['transient'] = {'remove_source': True}
        cells.append(cell)
    nb.cells = cells
    nb.metadata['language_info'] = {'name': 'python'}   # fenced code blocks tagged python
    exporter = MarkdownExporter()
    exporter.exclude_input_prompt = exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nb)
    body = re.sub(r'```python\n\s*```\n', '', body)
    body = re.sub(r'\n{3,}', '\n\n', '\n'.join(l.rstrip() for l in body.strip().splitlines()))
    return body + '\n'

if __name__ == '__main__':
    import argparse
    ap = argparse.ArgumentParser(description='Write README.md from nbs/index.ipynb (a typo or --help never rewrites it).')
    ap.add_argument('--check', action='store_true', help='only check that README.md is up to date')
    check = ap.parse_args().check
    text, readme = readme_text(), ROOT/'README.md'
    if check:
        if readme.read_text() != text: sys.exit('README.md is out of date: run python tools/make_readme.py')
    else: readme.write_text(text)

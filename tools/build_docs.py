"""Render the docs to a browsable HTML preview without Quarto.

Usage:
    python tools/build_docs.py [--out _docs_preview]
    python -m http.server -d _docs_preview 8000        # then open http://localhost:8000

`nbdev_docs` builds the real site with Quarto where Quarto is installed; this script is the preview for
machines without it. It runs nbdev's own docs processors (`nbdev.processors.FilterDefaults`) over every
notebook in nbs/, as `nbdev_docs` does: the title block becomes the page title, `#| hide` and `#| export`
cells are dropped, a `show_doc` cell is added for every export that has none, `show_doc` cells are re-run
so the API docs match the code, and names in backticks link to their docs. Each processed notebook is then
rendered with nbconvert's HTMLExporter, applying the Quarto cell options nbdev leaves for Quarto
(`#| echo: false`, `#| output: false`, `#| include: false`). Pages are named as Quarto names them
(nbs/00_tokenizer.ipynb -> tokenizer.html, so nbdev's doc links work), are self-contained (plots are
embedded as data: URIs, no scripts, no network) and share a sidebar that links every page from index.html
(made from nbs/index.ipynb). All other outputs are the ones committed in the notebooks.

nbdev's processors run unchanged, so a notebook that would break `nbdev_docs` (say, a cell that mixes imports
with test code: nbdev runs every cell that imports) breaks this preview and its test too.
"""
import argparse, html, os, re
from pathlib import Path

import nbformat, yaml
from nbconvert import HTMLExporter
from nbconvert.filters import markdown2html
from pygments.formatters import HtmlFormatter
from traitlets.config import Config
from execnb.nbio import read_nb, nb2str
from nbdev.config import get_config
from nbdev.doclinks import nbglob, _nbpath2html
from nbdev import processors as P

ROOT = Path(__file__).resolve().parents[1]

def notebooks(nbs_path):
    "The notebooks nbdev renders, in sidebar order (index first)"
    rel = lambda p: p.relative_to(nbs_path).as_posix()
    return sorted((Path(p) for p in nbglob(nbs_path)), key=lambda p: (rel(p) != 'index.ipynb', rel(p)))

def page_name(nb_path, nbs_path):
    "The page Quarto writes for `nb_path`, relative to the site root (nbdev's naming, which its doc links use)"
    return _nbpath2html(nb_path.relative_to(nbs_path)).as_posix()

def process(nb_path):
    "Run nbdev's docs processors over `nb_path`, unchanged (so this fails where `nbdev_docs` would): an nbformat notebook and its front matter"
    nb = read_nb(nb_path)
    os.environ['IN_TEST'] = '1'                     # as nbdev's docs driver sets it
    try: P.FilterDefaults()(nb)
    finally: del os.environ['IN_TEST']
    nb = nbformat.reads(nb2str(nb), as_version=4)
    fm = {}
    if nb.cells and nb.cells[0].cell_type == 'raw' and nb.cells[0].source.startswith('---'):
        fm = yaml.safe_load(nb.cells.pop(0).source.strip().strip('-')) or {}
    return nb, fm

_re_opt = re.compile(r'^#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')
def apply_cell_options(nb):
    "Do what Quarto does with the `#| key: value` cell options nbdev leaves in code cells, then drop them"
    cells = []
    for cell in nb.cells:
        if cell.cell_type == 'code':
            lines, opts = cell.source.splitlines(), {}
            while lines and _re_opt.match(lines[0]):
                k, v = _re_opt.match(lines.pop(0)).groups()
                opts[k] = v.strip('\'"').lower()
            cell.source = '\n'.join(lines).strip()
            if opts.get('include') == 'false': continue
            tags = set(cell.metadata.get('tags', []))
            if opts.get('echo') == 'false' or not cell.source: tags.add('remove_input')
            if opts.get('output') == 'false': tags.add('remove_output')
            cell.metadata['tags'] = sorted(tags)
            if not cell.source and not cell.outputs: continue
        cells.append(cell)
    nb.cells = cells
    return nb

def exporter():
    c = Config()
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_input_tags = {'remove_input'}
    c.TagRemovePreprocessor.remove_all_outputs_tags = {'remove_output'}
    exp = HTMLExporter(config=c, template_name='basic')     # the cells only: the page around them is ours
    exp.exclude_input_prompt = exp.exclude_output_prompt = True
    return exp

CSS = """
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #212529; }
.sidebar { position: fixed; top: 0; bottom: 0; left: 0; width: 15rem; overflow-y: auto; padding: 1rem;
  background: #f7f7f9; border-right: 1px solid #dee2e6; box-sizing: border-box; }
.sidebar .site { font-weight: 600; font-size: 1.2rem; text-decoration: none; color: #2780e3; }
.sidebar ul { list-style: none; padding: 0; margin: 1rem 0 0; }
.sidebar li { margin: .3rem 0; }
.sidebar a { color: #343a40; text-decoration: none; }
.sidebar a[aria-current] { font-weight: 600; color: #2780e3; }
main { margin-left: 15rem; padding: 1rem 2.5rem 4rem; max-width: 60rem; }
.description { font-style: italic; font-size: 1.2rem; opacity: .7; }
a { color: #2780e3; }
.anchor-link { visibility: hidden; margin-left: .3rem; text-decoration: none; }
h1:hover .anchor-link, h2:hover .anchor-link, h3:hover .anchor-link, h4:hover .anchor-link { visibility: visible; }
pre { background: #f8f9fa; padding: .6rem .8rem; overflow-x: auto; font-size: .85rem; border-radius: 4px; }
.input + .output_wrapper pre, .output_text pre { background: none; border-left: 2px solid lightsalmon; border-radius: 0; }
blockquote { margin: 0; }
img { max-width: 100%; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .9rem; }
th, td { border-bottom: 1px solid #dee2e6; padding: .25rem .6rem; text-align: left; vertical-align: top; }
.cell { margin-bottom: 1rem; }
"""

def inline_md(text):
    "Markdown in a title or description (Quarto renders it: `name` becomes code) as inline HTML"
    return re.sub(r'^<p>(.*)</p>$', r'\1', markdown2html(text).strip(), flags=re.DOTALL)

def page(title, description, body, nav, current):
    "A self-contained HTML page: sidebar `nav` [(href, title)], then the title block and `body`"
    mark, rel = ' aria-current="page"', lambda href: html.escape(os.path.relpath(href, os.path.dirname(current) or '.'))
    items = '\n'.join(f'<li><a href="{rel(href)}"{mark if href == current else ""}>{inline_md(t)}</a></li>' for href, t in nav)
    desc = f'<p class="description">{inline_md(description)}</p>' if description else ''
    css = CSS + HtmlFormatter(style='default').get_style_defs('.highlight')
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{re.sub('<[^>]*>', '', inline_md(title))}</title>
<style>{css}</style>
</head>
<body>
<nav class="sidebar" id="pages"><a class="site" href="{rel(nav[0][0])}">{inline_md(nav[0][1])}</a>
<ul>
{items}
</ul></nav>
<main>
<header><h1 class="title">{inline_md(title)}</h1>{desc}</header>
{body}
</main>
</body>
</html>
"""

def _link_attrs(m):
    'Pandoc link attributes, which show_doc writes: `<a ...>text</a>{key="v" .cls}` -> `<a ... key="v" class="cls">`'
    spec = html.unescape(m.group(3))
    attrs = [f'{k}="{html.escape(v)}"' for k, v in re.findall(r'([\w-]+)="([^"]*)"', spec)]
    classes = re.findall(r'(?:^|\s)\.([\w-]+)', spec)
    if classes: attrs.append(f'class="{" ".join(classes)}"')
    return f'{m.group(1)} {" ".join(attrs)}>{m.group(2)}</a>'

class Links:
    "Where the links in a page lead in the preview"
    def __init__(self, cfg, nbs_path, nb_pages):
        self.root, self.nbs_path, self.nb_pages = Path(cfg.config_path), nbs_path, nb_pages   # nb_pages: {notebook: page}
        self.site_url = cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/') + '/'
        self.repo_url = f"{cfg.git_url.rstrip('/')}/blob/{cfg.branch}/"
        self.pages = set(nb_pages.values())

    def href(self, link, here):
        """nbdev's doc links (absolute, to the published site) -> the preview's page; a link to a notebook -> its page;
        to another file of the repository (as the README writes them) -> that file on GitHub; anything else as it is"""
        rel = lambda target, anchor: os.path.relpath(target, os.path.dirname(here) or '.') + (f'#{anchor.lower()}' if anchor else '')
        if link.startswith(self.site_url):
            target, _, anchor = link[len(self.site_url):].partition('#')
            return rel(target, anchor) if target in self.pages else link
        if re.match(r'^([a-z][a-z0-9+.-]*:|#|/)', link, re.I) or not link: return link
        target, _, anchor = link.partition('#')
        for base in (self.nbs_path/Path(here).parent, self.root):    # as Quarto resolves it, then as the README does
            p = (base/target).resolve()
            if p in self.nb_pages: return rel(self.nb_pages[p], anchor)
            if p.exists() and p.is_relative_to(self.root):
                return self.repo_url + p.relative_to(self.root).as_posix() + (f'#{anchor}' if anchor else '')
        return link

    def __call__(self, body, here):
        "Fix the links in `body` (the page `here`), use Quarto's lowercase heading ids, apply Pandoc link attributes"
        body = re.sub(r'(<a\s[^>]*?)>([^<]*)</a>\{([^{}]*)\}', _link_attrs, body)
        body = re.sub(r'(<a\s[^>]*?href=")([^"]*)"', lambda m: f'{m.group(1)}{html.escape(self.href(html.unescape(m.group(2)), here))}"', body)
        body = re.sub(r'(<h[1-6][^>]*\sid=")([^"]*)"', lambda m: f'{m.group(1)}{m.group(2).lower()}"', body)
        return re.sub(r'(<a class="anchor-link" href="#)([^"]*)"', lambda m: f'{m.group(1)}{m.group(2).lower()}"', body)

def build(out):
    "Write the preview to `out`: one page per notebook and index.html; returns {page: title}"
    cfg = get_config()
    nbs_path = Path(cfg.config_path)/cfg.nbs_path
    processed = []
    for nb_path in notebooks(nbs_path):
        nb, fm = process(nb_path)
        processed.append((page_name(nb_path, nbs_path), nb, fm, nb_path))
    nav = [(name, fm.get('title') or nb_path.stem) for name, nb, fm, nb_path in processed]
    if not nav or nav[0][0] != 'index.html': raise FileNotFoundError(f'{nbs_path/"index.ipynb"} is missing: it makes index.html')
    exp, out = exporter(), Path(out)
    links = Links(cfg, nbs_path, {nb_path.resolve(): name for name, _, _, nb_path in processed})
    for (name, nb, fm, nb_path), (_, title) in zip(processed, nav):
        nb.metadata['language_info'] = {'name': 'python'}
        body, _ = exp.from_notebook_node(apply_cell_options(nb))
        dest = out/name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(page(title, fm.get('description', ''), links(body, name), nav, name))
    return dict(nav)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', default='_docs_preview', help='output folder, relative to the repository root (default: %(default)s)')
    args = ap.parse_args()
    os.chdir(ROOT)                                  # nbdev finds settings.ini from the working directory
    os.environ.setdefault('MPLBACKEND', 'Agg')
    written = build(ROOT/args.out)
    print(f'wrote {len(written)} pages to {ROOT/args.out}: {", ".join(written)}')

"""The docs preview (tools/build_docs.py) opened in a real browser, headless Chromium.

One Chromium run loads a check page that holds every preview page in a same-origin iframe; once all have
loaded (images decoded included) its script writes what each page shows into the DOM, which `--dump-dom`
prints: titles, links, heading ids and text, and for each <img> its decoded size and how many distinct
colours it has (a blank image has one).
"""
import functools, html, http.server, json, os, re, shutil, subprocess, sys, threading
from pathlib import Path

import nbformat, pytest
from nbdev.doclinks import _nbpath2html

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
NOTEBOOKS = sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.')))

def page_of(nb_path): return _nbpath2html(nb_path.relative_to(NBS)).as_posix()

def title_of(nb):
    "The notebook's first `# Title` markdown line: nbdev's page title"
    for cell in nb.cells:
        m = re.search(r'^#\s+(\S.*?)\s*$', cell.source, re.MULTILINE) if cell.cell_type == 'markdown' else None
        if m: return m.group(1)

_hidden = re.compile(r'^#\|\s*(hide|export|exporti|default_exp|include:\s*false|output:\s*false)\b', re.MULTILINE)
def n_plots(nb):
    "image/png outputs of the cells the docs show"
    return sum('image/png' in o.get('data', {}) for c in nb.cells if c.cell_type == 'code' and not _hidden.search(c.source)
               for o in c.outputs)

def api_names():
    "{page: [(name, anchor)]}: the public functions and classes each notebook exports, from nbdev's index"
    from atombert._modidx import d
    res = {}
    for mod, syms in d['syms'].items():
        for sym, (loc, _) in syms.items():
            name = sym[len(mod) + 1:]
            if '.' in name or name.startswith('_'): continue
            page, _, anchor = loc.partition('#')
            res.setdefault(page, []).append((name, anchor))
    return res

def chromium():
    exe = shutil.which('chromium') or shutil.which('chromium-browser')
    if not exe:   # CI installs it (.ci/run), so there its absence is a failure; elsewhere the browser checks skip, saying why
        why = 'Chromium is needed to check the docs in a browser: apt-get install -y chromium'
        if os.environ.get('CI') == 'true': pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return exe

CHECK_JS = """
function colours(img) {
  const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
  if (!c.width || !c.height) return 0;
  const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, c.width, c.height).data, seen = new Set();
  for (let i = 0; i < px.length && seen.size < 50; i += 4 * 97) seen.add(px.slice(i, i + 4).join());
  return seen.size;
}
window.addEventListener('load', () => {
  const res = {};
  for (const f of document.querySelectorAll('iframe')) {
    const d = f.contentDocument;
    res[f.dataset.page] = {
      title: d.title, h1: (d.querySelector('h1') || {}).textContent || '',
      links: [...d.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
      ids: [...d.querySelectorAll('[id]')].map(e => e.id),
      headings: [...d.querySelectorAll('h2, h3, h4')].map(h => [h.id, h.textContent.replace(/\\u00b6/g, '').trim()]),
      images: [...d.querySelectorAll('main img')].map(i => [i.complete, i.naturalWidth, i.naturalHeight, colours(i)]),
      text_len: d.body.innerText.length, pandoc_left: d.body.innerText.includes('{target='),
    };
  }
  document.getElementById('result').textContent = JSON.stringify(res);
});
"""

@pytest.fixture(scope='module')
def preview(tmp_path_factory):
    "Build the preview, serve it on localhost, and return what Chromium saw on each page"
    exe = chromium()
    out = tmp_path_factory.mktemp('docs_preview')
    r = subprocess.run([sys.executable, 'tools/build_docs.py', '--out', str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    pages = sorted(p.name for p in out.glob('*.html'))
    frames = '\n'.join(f'<iframe loading="eager" width="1280" height="800" data-page="{p}" src="{p}"></iframe>' for p in pages)
    (out/'_check.html').write_text(f'<!DOCTYPE html><meta charset="utf-8"><title>check</title>'
                                   f'<pre id="result">pending</pre>{frames}<script>{CHECK_JS}</script>')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = subprocess.run([exe, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--mute-audio',
                            f'--user-data-dir={tmp_path_factory.mktemp("chromium")}', '--virtual-time-budget=30000',
                            '--dump-dom', f'http://127.0.0.1:{server.server_address[1]}/_check.html'],
                           capture_output=True, text=True, timeout=180)
    finally: server.shutdown(); server.server_close()
    m = re.search(r'<pre id="result">(.*?)</pre>', r.stdout, re.DOTALL)
    assert m and m.group(1) != 'pending', f'Chromium did not report on the pages (rc {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}'
    return pages, json.loads(html.unescape(m.group(1))), r

def test_every_notebook_has_a_page_linked_from_the_index(preview):
    pages, seen, _ = preview
    expected = {page_of(p) for p in NOTEBOOKS}
    assert expected == set(pages) and 'index.html' in expected
    assert expected <= set(seen), 'pages Chromium could not open: ' + ', '.join(sorted(expected - set(seen)))
    assert expected - {'index.html'} <= set(seen['index.html']['links']), 'not linked from the index: ' + \
        ', '.join(sorted(expected - {'index.html'} - set(seen['index.html']['links'])))

@pytest.mark.parametrize('nb_path', NOTEBOOKS, ids=lambda p: p.stem)
def test_page_renders_title_plots_and_api_docs(preview, nb_path):
    _, seen, _ = preview
    nb = nbformat.read(nb_path, as_version=4)
    page = seen[page_of(nb_path)]
    title = title_of(nb).replace('`', '')     # Markdown in titles is rendered: `atombert` becomes code
    assert page['title'] == title and page['h1'].strip() == title
    assert page['text_len'] > 500, 'the page is nearly empty'
    assert not page['pandoc_left'], 'Pandoc link attributes left as text'
    broken = [i for i in page['images'] if not (i[0] and i[1] > 0 and i[2] > 0)]
    assert not broken, f'images the browser could not decode: {broken}'
    plots = [i for i in page['images'] if i[3] > 1]
    assert len(plots) >= n_plots(nb), f'{n_plots(nb)} plots in the notebook, {len(plots)} rendered (not blank) on the page'
    headings = dict(page['headings'])
    for name, anchor in api_names().get(page_of(nb_path), []):
        assert headings.get(anchor) == name, f'no show_doc heading for {name} (#{anchor}) on {page_of(nb_path)}'

def test_links_between_pages_resolve(preview):
    "nbdev links `names` in prose to their docs (e.g. `fit` on the MNLI page): in the preview they lead to a page and heading of the preview"
    pages, seen, _ = preview
    assert 'training.html#fit' in seen['mnli.html']['links']
    bad = []
    for page, s in seen.items():
        for link in s['links']:
            if link.startswith(('http:', 'https:', 'mailto:')):
                if link.startswith('https://atombert.github.io/'): bad.append(f'{page}: {link} (the published site, not the preview)')
                continue
            target, _, anchor = link.partition('#')
            target = target or page
            if target not in seen or (anchor and anchor not in seen[target]['ids']): bad.append(f'{page}: {link}')
    assert not bad, 'links that lead nowhere in the preview:\n' + '\n'.join(bad)

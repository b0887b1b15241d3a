"""Print one of the README's two set-up commands, exactly as written there: `main` (install and run the main job)
or `test` (install and run the tests). CI runs `test` through this script, and tests/test_readme_commands.py runs
`main`, so neither can drift from what a reader copies.

usage: python tools/readme_commands.py main|test
"""
import re, sys
from pathlib import Path

README = Path(__file__).resolve().parents[1]/'README.md'


def readme_commands(text: str | None = None) -> dict:
    "The two commands of the README's set-up section: {'main': ..., 'test': ...}."
    text = README.read_text() if text is None else text
    section = text.split('## Set-up', 1)[1].split('\n## ', 1)[0]
    blocks = [b.strip() for b in re.findall(r'```(?:sh|bash)\n(.*?)```', section, flags=re.S)]
    if len(blocks) != 2 or any('\n' in b for b in blocks):
        raise SystemExit(f'README.md: the set-up section must hold exactly two one-line commands, found {blocks!r}')
    main, test = blocks
    if 'pytest' not in test: raise SystemExit(f'README.md: the second set-up command does not run the tests: {test!r}')
    return {'main': main, 'test': test}


if __name__ == '__main__':
    if len(sys.argv) != 2 or sys.argv[1] not in ('main', 'test'): raise SystemExit(__doc__)
    print(readme_commands()[sys.argv[1]])

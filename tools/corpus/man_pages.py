#!/usr/bin/env python3
"""Renders the manual pages of common Debian command-line packages to plain text, for reading-comprehension
training (tools/train/reading.py asks which option does what).

Pages are rendered as a user reads them (`man --nh --nj -P cat`, 80 columns, overstrikes removed). The pages of
the held-out retrieval set (bench/data/retrieval) are left out. Each package's copyright file is fingerprinted
and its DEP-5 License fields recorded in the manifest.

    python3 tools/corpus/man_pages.py      # -> .tmp/corpus/man-pages.jsonl.xz, .tmp/corpus/man-pages-manifest.json
"""

import argparse
import hashlib
import json
import lzma
import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ('coreutils', 'findutils', 'diffutils', 'sed', 'mawk', 'util-linux', 'procps', 'openssh-client', 'curl',
            'apt', 'dpkg', 'bash', 'less', 'xz-utils', 'bzip2', 'zstd', 'make', 'file', 'wget', 'unzip', 'zip',
            'patch', 'man-db')
# dir and vdir have the ls manual's text.
HELD_OUT = {'ls', 'dir', 'vdir', 'cp', 'grep', 'gzip', 'tar'}
MIN_CHARS, MAX_CHARS = 600, 60_000


def sh(*cmd: str) -> str:
    env = dict(os.environ, MANWIDTH='80', LC_ALL='C.UTF-8')
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout


def pages_of(package: str) -> list[Path]:
    files = sh('dpkg', '-L', package).split('\n')
    return sorted(Path(f) for f in files if re.match(r'/usr/share/man/man[18]/[^/]+\.[18]\.gz$', f))


def render(page: Path) -> str:
    raw = subprocess.run(['man', '--nh', '--nj', '-P', 'cat', str(page)], capture_output=True,
                         env=dict(os.environ, MANWIDTH='80', LC_ALL='C.UTF-8'), check=True).stdout
    text = subprocess.run(['col', '-bx'], input=raw, capture_output=True, check=True).stdout.decode('utf-8', 'replace')
    return re.sub(r'\n{3,}', '\n\n', text).strip() + '\n'


def licenses(package: str) -> tuple[str, str]:
    path = Path('/usr/share/doc') / package / 'copyright'
    text = path.read_text(encoding='utf-8', errors='replace')
    found = sorted({m.strip() for m in re.findall(r'^License:\s*(\S.*)$', text, re.M)})
    return ', '.join(found) or 'see copyright file', hashlib.sha256(text.encode()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', type=Path, default=REPO / '.tmp/corpus')
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    records, docs = [], []
    for package in PACKAGES:
        license_text, copyright_sha = licenses(package)
        count = 0
        for page in pages_of(package):
            name = page.name.rsplit('.', 2)[0]
            if name in HELD_OUT or name in seen:
                continue
            try:
                text = render(page)
            except subprocess.CalledProcessError:
                continue
            if not MIN_CHARS <= len(text) <= MAX_CHARS:
                continue
            seen.add(name)
            docs.append({'source': 'man', 'id': name, 'package': package, 'text': text})
            count += 1
        version = sh('dpkg-query', '-W', '-f=${Version}', package)
        records.append({'package': package, 'version': version, 'pages': count, 'license': license_text,
                        'copyright': f'/usr/share/doc/{package}/copyright', 'copyright_sha256': copyright_sha})
        print(f'{package:16s} {count:4d} pages', flush=True)
    tmp = args.out / 'man-pages.jsonl.xz.tmp'
    with lzma.open(tmp, 'wt', encoding='utf-8', preset=9) as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + '\n')
    tmp.replace(args.out / 'man-pages.jsonl.xz')
    manifest = {'debian': Path('/etc/debian_version').read_text().strip(), 'held_out': sorted(HELD_OUT),
                'pages': len(docs), 'chars': sum(len(d['text']) for d in docs), 'packages': records}
    (args.out / 'man-pages-manifest.json').write_text(json.dumps(manifest, indent=2) + '\n', encoding='utf-8')
    print(f'{len(docs)} pages, {manifest["chars"] / 1e6:.2f} MB')


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
"""Builds the demo-model training corpus from freely licensed Debian text packages.

Downloads the packages with `apt-get download`, unpacks them with `dpkg-deb -x`, converts them to clean
plain text (./to_text.py), writes a few held-out documents for the fidelity benchmark and removes them
from the training text, then packs the rest as xz-compressed JSON lines with a manifest of sources,
versions and licenses. Runs on a Debian 12 CPU machine; needs apt-get, dpkg-deb and python3 only.

    python3 tools/corpus/build_corpus.py            # -> .tmp/corpus/{corpus.jsonl.xz,manifest.json}
"""

import argparse
import hashlib
import json
import lzma
import random
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sources import SOURCES, Source  # noqa: E402
from to_text import Doc, bible_chapters, dictd_entries, html_document  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

# (file name, source, doc ids, why this passage): each doc is removed from training; the passage is
# trimmed to whole lines, at most MAX_HELDOUT characters.
HELDOUT = (
    ('kjv-ruth-1.txt', 'kjv', ('Ruth 1',), 'narrative prose, archaic English'),
    ('devil-dictionary-ba.txt', 'devil', ('baal', 'babe', 'bacchus', 'back', 'backbite', 'bait', 'baptism',
                                          'barometer', 'barrack', 'basilisk', 'bastinado', 'bath', 'battle'),
     'satirical definitions'),
    ('jargon-hacker-ethic.txt', 'jargon', ('hacker ethic',), 'hacker slang, modern prose'),
    ('python-appetite.txt', 'python-docs', ('tutorial/appetite.html',), 'technical tutorial prose'),
    ('debian-handbook-why-debian.txt', 'debian-handbook', ('sect.why-debian.html',), 'technical prose'),
)
MIN_HELDOUT, MAX_HELDOUT = 900, 3000


def sh(*cmd: str, cwd: Path | None = None) -> str:
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


def fetch(packages: list[str], work: Path) -> dict[str, dict[str, str]]:
    """Downloads (once) and unpacks each package; returns name -> {version, deb, root, copyright...}."""
    debs = work / 'debs'
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(debs.glob(f'{p}_*.deb'))]
    if missing:
        print(f'apt-get download {" ".join(missing)}', flush=True)
        sh('apt-get', 'download', *missing, cwd=debs)
    info: dict[str, dict[str, str]] = {}
    for p in packages:
        deb = sorted(debs.glob(f'{p}_*.deb'))[-1]
        root = work / 'x' / p
        if not root.exists():
            root.mkdir(parents=True)
            sh('dpkg-deb', '-x', str(deb), str(root))
        copyright_file = root / 'usr/share/doc' / p / 'copyright'
        info[p] = {
            'version': sh('dpkg-deb', '-f', str(deb), 'Version').strip(),
            'deb': deb.name,
            'deb_sha256': hashlib.sha256(deb.read_bytes()).hexdigest(),
            'copyright': f'/usr/share/doc/{p}/copyright',
            'copyright_sha256': hashlib.sha256(copyright_file.read_bytes()).hexdigest(),
            'root': str(root),
        }
    return info


def convert(src: Source, info: dict[str, dict[str, str]]) -> list[Doc]:
    root = Path(info[src.packages[0]]['root'])
    if src.kind == 'bible':
        program = Path(info['bible-kjv']['root']) / 'usr/bin/bible'
        dump = sh(str(program), '-p', str(root / 'usr/lib'), '-f', 'Gen1:1-Rev22:21')
        return list(bible_chapters(dump))
    if src.kind == 'dictd':
        base = root / 'usr/share/dictd' / src.dictd
        return list(dictd_entries(src.name, base.with_suffix('.index'), base.with_suffix('.dict.dz')))
    html_root = root / src.html_root
    files = sorted({f for g in src.html_globs for f in html_root.glob(g)})
    docs = []
    for f in files:
        rel = f.relative_to(html_root).as_posix()
        if rel in src.html_exclude:
            continue
        doc = html_document(src.name, rel, f.read_text(encoding='utf-8', errors='replace'))
        if doc:
            docs.append(doc)
    return docs


def trim(text: str) -> str:
    """Cuts at a line boundary (a paragraph's, or a verse's) so the passage stays under MAX_HELDOUT."""
    out: list[str] = []
    for line in text.split('\n'):
        if out and len('\n'.join(out + [line])) > MAX_HELDOUT:
            break
        out.append(line)
    return '\n'.join(out).strip()


def hold_out(by_source: dict[str, list[Doc]], heldout_dir: Path) -> list[dict[str, object]]:
    heldout_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for file_name, source, ids, why in HELDOUT:
        docs = {d.id: d for d in by_source[source]}
        missing = [i for i in ids if i not in docs]
        if missing:
            raise SystemExit(f'held-out doc(s) {missing} not found in source {source}')
        text = trim('\n\n'.join(docs[i].text for i in ids))
        if len(text) < MIN_HELDOUT:
            raise SystemExit(f'held-out {file_name} is only {len(text)} characters')
        (heldout_dir / file_name).write_text(text + '\n', encoding='utf-8')
        by_source[source] = [d for d in by_source[source] if d.id not in ids]
        records.append({'file': file_name, 'source': source, 'removed_docs': list(ids), 'chars': len(text),
                        'kind': why})
        print(f'held out {file_name}: {len(text)} chars from {source} {list(ids)}', flush=True)
    return records


def sample(docs: list[Doc], cap: int | None, seed: str) -> list[Doc]:
    if cap is None or sum(len(d.text) for d in docs) <= cap:
        return docs
    order = list(docs)
    random.Random(seed).shuffle(order)
    kept, total = [], 0
    for d in order:
        if total + len(d.text) > cap:
            continue
        kept.append(d)
        total += len(d.text)
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--work', type=Path, default=REPO / '.tmp/corpus-work', help='downloads and unpacked debs')
    ap.add_argument('--out', type=Path, default=REPO / '.tmp/corpus', help='corpus.jsonl.xz and manifest.json')
    ap.add_argument('--heldout', type=Path, default=REPO / 'bench/data/heldout', help='held-out documents')
    args = ap.parse_args()

    packages = sorted({p for s in SOURCES for p in s.packages})
    info = fetch(packages, args.work)
    by_source = {s.name: convert(s, info) for s in SOURCES}
    heldout = hold_out(by_source, args.heldout)

    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / 'corpus.jsonl.xz.tmp'
    manifest_sources = []
    with lzma.open(tmp, 'wt', encoding='utf-8', preset=9) as f:
        for s in SOURCES:
            all_docs = by_source[s.name]
            docs = sample([d for d in all_docs if len(d.text) >= s.min_chars], s.cap, s.name)
            chars = sum(len(d.text) for d in docs)
            for d in docs:
                f.write(json.dumps({'source': d.source, 'id': d.id, 'text': d.text}, ensure_ascii=False) + '\n')
            manifest_sources.append({
                'name': s.name, 'license': s.license,
                'packages': {p: {k: v for k, v in info[p].items() if k != 'root'} for p in s.packages},
                'docs_available': len(all_docs), 'chars_available': sum(len(d.text) for d in all_docs),
                'docs_used': len(docs), 'chars_used': chars,
            })
            print(f'{s.name:18s} {len(docs):6d}/{len(all_docs):6d} docs {chars / 1e6:7.2f} MB', flush=True)
    tmp.replace(args.out / 'corpus.jsonl.xz')
    manifest = {
        'format': 'corpus.jsonl.xz: one JSON object a line, {source, id, text}; paragraphs separated by a blank line',
        'debian': Path('/etc/debian_version').read_text().strip(),
        'sources': manifest_sources,
        'heldout': heldout,
        'total_chars': sum(s['chars_used'] for s in manifest_sources),
        'packed_bytes': (args.out / 'corpus.jsonl.xz').stat().st_size,
    }
    (args.out / 'manifest.json').write_text(json.dumps(manifest, indent=2) + '\n', encoding='utf-8')
    print(f'total {manifest["total_chars"] / 1e6:.2f} MB text, packed {manifest["packed_bytes"] / 1e6:.2f} MB')


if __name__ == '__main__':
    main()

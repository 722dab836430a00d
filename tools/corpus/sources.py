"""The Debian packages the demo-model corpus is built from, with the share each may take.

`cap` is the most characters of clean text a source may contribute (None = all of it); sources are
listed prose-first, and sampling within a capped source is deterministic. `license` is a short
summary read from the package's /usr/share/doc/<pkg>/copyright, which the manifest also fingerprints.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    name: str
    packages: tuple[str, ...]
    kind: str  # converter: bible | dictd | html
    license: str
    cap: int | None
    min_chars: int = 0  # shorter documents (one-line dictionary stubs) are left out
    # kind-specific settings: dictd file stem, or html directory and glob patterns
    dictd: str = ''
    html_root: str = ''
    html_globs: tuple[str, ...] = ()
    html_exclude: tuple[str, ...] = ()


SOURCES: tuple[Source, ...] = (
    Source('kjv', ('bible-kjv-text', 'bible-kjv'), 'bible',
           'King James Version text: public domain (outside the UK); Debian packaging GPL-2+', None),
    Source('devil', ('dict-devil',), 'dictd', "The Devil's Dictionary (A. Bierce): public domain", None,
           dictd='devil'),
    Source('jargon', ('dict-jargon',), 'dictd', 'The Jargon File 4.4.7: public domain', None, dictd='jargon'),
    Source('debian-handbook', ('debian-handbook',), 'html', 'GPL-2.0+ or CC-BY-SA-3.0', None,
           html_root='usr/share/doc/debian-handbook/html/en-US', html_globs=('*.html',)),
    Source('debian-reference', ('debian-reference-en',), 'html', 'GPL-2+', None,
           html_root='usr/share/debian-reference', html_globs=('*.en.html',)),
    Source('debian-faq', ('debian-faq',), 'html',
           'Debian FAQ permission notice (copying and modified versions permitted), (C) SPI', None,
           html_root='usr/share/doc/debian/FAQ', html_globs=('*.en.html',)),
    Source('python-docs', ('python3.11-doc',), 'html', 'PSF License Agreement (Python 3.11 documentation)',
           7_000_000, html_root='usr/share/doc/python3.11/html',
           html_globs=('tutorial/*.html', 'howto/*.html', 'faq/*.html', 'glossary.html', 'reference/*.html',
                       'library/*.html', 'using/*.html', 'whatsnew/*.html', 'extending/*.html'),
           html_exclude=('whatsnew/changelog.html',)),
    Source('foldoc', ('dict-foldoc',), 'dictd', 'FOLDOC: GNU Free Documentation License 1.1 or later', None,
           dictd='foldoc'),
    Source('gcide', ('dict-gcide',), 'dictd',
           'GCIDE 0.48 (Webster 1913 + WordNet-derived): GPL-2+', 14_000_000, dictd='gcide',
           min_chars=160),
)

"""Converters from the packages' native formats (bible-kjv dump, dictd databases, HTML) to clean documents.

Every converter yields Doc records whose text is plain UTF-8: paragraphs separated by one blank line,
whitespace inside a paragraph collapsed, markup removed. Verse (short indented lines) keeps its line breaks.
"""

import base64
import gzip
import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator


@dataclass
class Doc:
    source: str
    id: str
    text: str


# The 66 books in the order the bible-kjv dump lists them (it prints its own abbreviations).
KJV_BOOKS = (
    'Genesis', 'Exodus', 'Leviticus', 'Numbers', 'Deuteronomy', 'Joshua', 'Judges', 'Ruth', '1 Samuel',
    '2 Samuel', '1 Kings', '2 Kings', '1 Chronicles', '2 Chronicles', 'Ezra', 'Nehemiah', 'Esther', 'Job',
    'Psalms', 'Proverbs', 'Ecclesiastes', 'Song of Solomon', 'Isaiah', 'Jeremiah', 'Lamentations', 'Ezekiel',
    'Daniel', 'Hosea', 'Joel', 'Amos', 'Obadiah', 'Jonah', 'Micah', 'Nahum', 'Habakkuk', 'Zephaniah', 'Haggai',
    'Zechariah', 'Malachi', 'Matthew', 'Mark', 'Luke', 'John', 'Acts', 'Romans', '1 Corinthians',
    '2 Corinthians', 'Galatians', 'Ephesians', 'Philippians', 'Colossians', '1 Thessalonians',
    '2 Thessalonians', '1 Timothy', '2 Timothy', 'Titus', 'Philemon', 'Hebrews', 'James', '1 Peter', '2 Peter',
    '1 John', '2 John', '3 John', 'Jude', 'Revelation',
)

VERSE = re.compile(r'^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$')


def normalize(text: str) -> str:
    """NFC, typographic quotes and dashes kept, control characters and non-breaking spaces flattened."""
    text = unicodedata.normalize('NFC', text).replace('\u00a0', ' ').replace('\u00ad', '')
    return ''.join(c for c in text if c in '\n\t' or unicodedata.category(c)[0] != 'C')


def reflow(block: str, keep_verse: bool = False) -> str:
    """Joins a paragraph's lines; with keep_verse, indented short lines (a poem) keep their breaks."""
    lines = [l for l in block.split('\n') if l.strip()]
    indented = [l for l in lines if l.startswith('    ') and len(l.strip()) < 70]
    if keep_verse and len(lines) >= 2 and len(indented) >= len(lines) - 1:
        return '\n'.join(l.strip() for l in lines)
    return re.sub(r'\s+', ' ', ' '.join(l.strip() for l in lines)).strip()


def paragraphs_to_text(paragraphs: list[str]) -> str:
    return '\n\n'.join(p for p in paragraphs if p)


def bible_chapters(dump: str) -> Iterator[Doc]:
    """The `bible -f` dump: one verse a line, 'Ge1:1 In the beginning...'. One doc per chapter."""
    books: list[str] = []
    chapter_key: tuple[str, str] | None = None
    verses: list[str] = []

    def flush() -> Iterator[Doc]:
        if chapter_key and verses:
            name = f'{KJV_BOOKS[len(books) - 1]} {chapter_key[1]}'
            yield Doc('kjv', name, name + '\n\n' + '\n'.join(verses))

    for line in dump.splitlines():
        m = VERSE.match(line)
        if not m:
            continue
        abbrev, chapter, _, text = m.groups()
        if not books or books[-1] != abbrev:
            books.append(abbrev)
        if chapter_key != (abbrev, chapter):
            yield from flush()
            chapter_key, verses = (abbrev, chapter), []
        verses.append(normalize(text.strip()))
    yield from flush()
    if len(books) != len(KJV_BOOKS):
        raise ValueError(f'expected {len(KJV_BOOKS)} books in the KJV dump, found {len(books)}')


B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'


def _b64num(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + B64.index(c)
    return n


GCIDE_PRON = re.compile(r'\\[^\\\n]{1,80}\\')
GCIDE_TAG = re.compile(r'\[(?:1913 Webster|PJC|WordNet 1\.5|Century Dict\.|Webster 1913 Suppl\.|[A-Z]{1,4}|'
                       r'Obs|R|Colloq|Archaic|Prov\. Eng|Scot)\.?\]')
BRACKETED = re.compile(r'\[[^\[\]]{0,300}\]')
# A quotation's attribution, as in '"Magic I here abjure." --Shak.'
CITATION = re.compile(r' ?--[A-Z][\w.&,\' ]{0,40}?\.(?=\s|$)')
XREF = re.compile(r'\{([^{}]*)\}')
FOLDOC_TOPIC = re.compile(r'^(?:<[a-z][a-z ,]{1,40}>\s*)+')


def _clean_dict_paragraph(source: str, para: str) -> str | None:
    if source == 'gcide':
        para = GCIDE_PRON.sub('', para)
        para = GCIDE_TAG.sub('', para)
        para = BRACKETED.sub('', para)
        para = CITATION.sub('', para)
    para = XREF.sub(r'\1', para)
    if source == 'foldoc':
        para = FOLDOC_TOPIC.sub('', para.strip())
        if re.fullmatch(r'\(\d{4}-\d{2}-\d{2}\)', para.strip()) or para.strip().startswith(('[', '(http', 'Home')):
            return None
    text = reflow(para, keep_verse=source == 'devil')
    text = re.sub(r' +([,.;:])', r'\1', text)
    text = re.sub(r'\(\s*\)', '', text).strip(' ,;')
    return text or None


def dictd_entries(source: str, index_path: Path, dict_path: Path) -> Iterator[Doc]:
    """A dictd database: the index gives each headword's byte offset and length in the (dictzip) data."""
    data = gzip.open(dict_path, 'rb').read()
    seen: set[int] = set()
    for line in index_path.read_text(encoding='utf-8', errors='replace').splitlines():
        parts = line.split('\t')
        if len(parts) < 3 or parts[0].startswith('00-database') or parts[0].startswith('00database'):
            continue
        off, length = _b64num(parts[1]), _b64num(parts[2])
        if off in seen:
            continue
        seen.add(off)
        raw = normalize(data[off:off + length].decode('utf-8', errors='replace'))
        blocks = re.split(r'\n\s*\n', raw.strip('\n'))
        paras = [p for p in (_clean_dict_paragraph(source, b) for b in blocks) if p]
        if paras:
            yield Doc(source, parts[0], paragraphs_to_text(paras))


BLOCK_TAGS = {'p', 'div', 'li', 'dt', 'dd', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'tr', 'br', 'blockquote',
              'section', 'table', 'ul', 'ol', 'dl', 'title', 'td', 'th', 'caption', 'figure'}
SKIP_TAGS = {'script', 'style', 'pre', 'head', 'nav', 'footer', 'code-block', 'svg', 'math'}
SKIP_CLASSES = {'related', 'sphinxsidebar', 'footer', 'navheader', 'navfooter', 'toc', 'highlight',
                'headerlink', 'sig', 'toctree-wrapper', 'literal-block', 'programlisting', 'screen',
                'legalnotice', 'revhistory', 'index', 'footnotes', 'copyright', 'authorgroup'}
VOID_TAGS = {'br', 'img', 'hr', 'meta', 'link', 'input', 'area', 'base', 'col', 'embed', 'source', 'wbr'}


class _ProseExtractor(HTMLParser):
    """Collects the text of block elements, skipping navigation, code listings and boilerplate."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self.current: list[str] = []
        self.stack: list[bool] = []  # per open element: does it start a skipped region
        self.skip_depth = 0

    def _flush(self) -> None:
        text = re.sub(r'\s+', ' ', ''.join(self.current)).strip()
        if text:
            self.paragraphs.append(text)
        self.current = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in BLOCK_TAGS:
            self._flush()
        if tag in VOID_TAGS:
            return
        classes = set((dict(attrs).get('class') or '').split())
        skip = tag in SKIP_TAGS or bool(classes & SKIP_CLASSES) or any(c.startswith('highlight') for c in classes)
        self.stack.append(skip)
        if skip:
            self.skip_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_TAGS or not self.stack:
            return
        if self.stack.pop():
            self.skip_depth -= 1
        if tag in BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self.skip_depth == 0:
            self.current.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def is_prose(paragraph: str) -> bool:
    """Sentences, not tables, code or link lists: enough words, mostly letters, ends like a sentence."""
    words = paragraph.split()
    if len(words) < 8:
        return False
    letters = sum(c.isalpha() or c.isspace() for c in paragraph)
    if letters / len(paragraph) < 0.85:
        return False
    return paragraph.rstrip()[-1] in '.:?!)"\u201d'


def html_document(source: str, doc_id: str, html: str) -> Doc | None:
    parser = _ProseExtractor()
    parser.feed(html)
    parser.close()
    paras = [normalize(p.replace('¶', '').strip()) for p in parser.paragraphs]
    kept = [p for p in paras if is_prose(p)]
    if not kept:
        return None
    return Doc(source, doc_id, paragraphs_to_text(kept))

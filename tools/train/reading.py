"""Synthetic reading-comprehension examples from the language-model corpus, in the layout of a KDN query.

`kdn serve` answers a query from [BOS] + knowledge chunks + "\\n\\nQuestion: {q}\\nAnswer:" (kdn/query/prompt.ts).
An example here is the same: passages (document excerpts cut at paragraph boundaries, as the chunker cuts), a
question, and an answer that is a span of one passage. Kinds:

- single: one passage holds the answer; the question is rebuilt from one of its sentences (the subject asked with
  who/what, "the name of X was Y", a number asked with "how many", a dictionary headword's definition, a manual
  page option and what it does);
- bridge: two passages: the question names an entity only by what another passage says about it ("the one who ..."),
  so the answer needs both;
- distractor passages from other documents surround the answer passages in either kind.

For training (not for the held-out set, which stays natural), make_examples can also:

- make a share of examples counterfactual: the answer span is replaced, in the answer passages and the answer, by a
  span of the same kind from another document (a name by a name, a number by another number, an option string by
  another manual page's, a definition by another headword's), so that remembering the corpus cannot pay and only
  reading the context can;
- cap how many examples one document contributes, so that no manual page is asked about hundreds of times;
- ask a share of questions in other words (paraphrases of the rule's question, synonyms for some of its words,
  "According to the text, ...").

Documents whose hash falls in the evaluation share (is_eval_doc) never appear in training examples: the benchmark's
synthetic questions are built from them.
"""

import hashlib
import json
import lzma
import random
import re
from collections import Counter
from dataclasses import dataclass

PASSAGE_CHARS = 900  # about 256 tokens at 3.1-3.5 bytes a token: kdn's default chunk
CONTEXT_CHARS = 5600  # about 1,800 tokens: room for the question and answer in 2,048 positions
LEADING_WORDS = {'and', 'then', 'but', 'now', 'so', 'for', 'also', 'thus', 'therefore', 'however', 'moreover',
                 'wherefore', 'behold', 'finally', 'again', 'yet', 'or', 'nor', 'furthermore'}
PRONOUNS = {'he', 'she', 'it', 'they', 'we', 'you', 'i', 'this', 'that', 'these', 'those', 'there', 'which', 'who',
            'what', 'his', 'her', 'their', 'its', 'our', 'my', 'thou', 'ye', 'one', 'some', 'all', 'each', 'here',
            'him', 'them', 'me', 'us', 'such', 'both', 'many', 'most', 'any', 'none', 'if', 'when', 'as', 'while'}
VERBS = {'is', 'was', 'are', 'were', 'has', 'had', 'have', 'went', 'came', 'said', 'made', 'took', 'gave', 'saw',
         'called', 'told', 'became', 'can', 'could', 'will', 'would', 'may', 'might', 'must', 'shall', 'should',
         'does', 'did', 'do', 'provides', 'contains', 'means', 'refers', 'allows', 'uses', 'returns', 'takes',
         'makes', 'gives', 'reigned', 'begat', 'spake', 'answered', 'sent', 'brought', 'dwelt', 'arose', 'lived',
         'runs', 'supports', 'includes', 'requires', 'prints', 'creates', 'defines', 'describes', 'stands', 'keeps'}
NUMBER_WORDS = {'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten', 'eleven', 'twelve',
                'twenty', 'thirty', 'forty', 'fifty', 'hundred', 'thousand'}
CLAUSE_WORDS = {'which', 'that', 'who', 'whom', 'where', 'when', 'if', 'because', 'for', 'although', 'while', 'as',
                'than', 'so', 'what', 'how', 'why', 'whether', 'not', 'only'}
DETERMINERS = {'the', 'a', 'an', 'this', 'that', 'its', 'his', 'her', 'their', 'our', 'your', 'my', 'some', 'any',
               'each', 'every', 'no', 'these', 'those'}
PREPOSITIONS = {'in', 'on', 'at', 'by', 'with', 'from', 'to', 'of', 'after', 'before', 'during', 'under', 'over',
                'through', 'into', 'upon', 'unto', 'for', 'since', 'until', 'about', 'like', 'without'}
DICTIONARIES = {'gcide', 'foldoc', 'jargon', 'devil'}
WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*|\d[\d,.]*\d|\d")


@dataclass
class Example:
    pieces: list[str]  # passages in context order; each ends the way a chunk ends ("\n\n" after a paragraph)
    question: str
    answer: str
    kind: str  # single | bridge
    rule: str  # which question rule made it
    source: str
    doc: int = -1  # the corpus document the answer comes from
    counterfactual: bool = False  # the answer span was swapped for one from another document


def is_eval_doc(doc: dict[str, str]) -> bool:
    """A stable 2% of documents, by hash (another salt than the language-model validation split)."""
    return hashlib.md5(f'reading/{doc["source"]}/{doc["id"]}'.encode()).digest()[0] < 5


def paragraphs(text: str) -> list[str]:
    """Paragraphs verbatim (a manual page's indentation kept), so passages read as the uploaded document does."""
    return [p.strip('\n').rstrip() for p in re.split(r'\n[ \t]*\n', text) if p.strip()]


def sentences(paragraph: str) -> list[str]:
    parts = re.split(r'(?<=[.!?;])\s+(?=[A-Z"“(])|\n', paragraph)
    return [s.strip() for s in parts if 4 <= len(s.split()) <= 45]


def clean_span(words: list[str]) -> str:
    return ' '.join(words).strip(' ,;:.')


class Corpus:
    """Documents split into paragraphs, with how often each word is written capitalized (to tell names apart)."""

    def __init__(self, docs: list[dict[str, str]], word_stats: list[dict[str, str]] | None = None):
        """`word_stats`: the documents to count capitalization in (default: `docs`), e.g. the whole corpus."""
        self.docs = [d for d in docs if len(d['text']) >= 200]
        self.paras = [paragraphs(d['text']) for d in self.docs]
        counts: dict[str, list[int]] = {}
        stats = word_stats or self.docs
        for d in stats[:: max(1, len(stats) // 6000)]:
            for w in WORD.findall(d['text']):
                c = counts.setdefault(w.lower(), [0, 0])
                c[0 if w[0].isupper() else 1] += 1
        self.names = {w for w, (cap, low) in counts.items() if cap >= 2 and cap > 4 * low and w not in PRONOUNS}
        # Names so frequent that a question about them is answered from priors, not by reading (Debian, LORD).
        by_count = sorted(self.names, key=lambda w: -counts[w][0])
        self.common_names = set(by_count[:40])
        self.by_source: dict[str, list[int]] = {}
        for i, d in enumerate(self.docs):
            self.by_source.setdefault(d['source'], []).append(i)
        self.subject_index: dict[str, list[tuple[int, str]]] = {}

    def is_name(self, word: str) -> bool:
        return word[:1].isupper() and word.lower().strip("'’") in self.names

    def build_subject_index(self, limit: int) -> None:
        """name -> (doc, sentence) where the name is the sentence's subject: the first hop of bridge questions."""
        for i in range(min(limit, len(self.docs))):
            for para in self.paras[i]:
                for s in sentences(para):
                    found = subject_split(self, s)
                    if found and len(found[0]) == 1 and self.is_name(found[0][0]):
                        self.subject_index.setdefault(found[0][0], []).append((i, s))


def subject_split(corpus: Corpus, sentence: str) -> tuple[list[str], str, list[str]] | None:
    """(subject words, verb, the rest) when the sentence opens with a short subject before a known verb."""
    if not sentence[:1].isupper():
        return None
    words = sentence.rstrip('.!?;:').split()
    while words and words[0].lower().strip(',') in LEADING_WORDS:
        words = words[1:]
    for i in range(1, min(6, len(words) - 2)):
        w = words[i].lower()
        if w in VERBS or (w.endswith('ed') and len(w) > 4 and i <= 4):
            subject = words[:i]
            if subject[-1].lower() in DETERMINERS:
                continue
            if subject[0].lower() in PREPOSITIONS:
                return None
            if subject[0].lower() in PRONOUNS or any(x.endswith((',', ';', ':')) or x.lower() in CLAUSE_WORDS
                                                     for x in subject):
                return None
            rest = words[i + 1:]
            cut = next((j for j, x in enumerate(rest) if j >= 3 and x.endswith((',', ';', ':'))), None)
            rest = rest[:cut + 1] if cut is not None else rest
            if len(rest) > 14:
                return None
            return subject, words[i], rest
    return None


# ---- question rules: (corpus, doc index, sentence) -> (question, answer) or None ----

def ask_subject(corpus: Corpus, doc: int, sentence: str) -> tuple[str, str] | None:
    found = subject_split(corpus, sentence)
    if not found or not found[2]:
        return None
    subject, verb, rest = found
    wh = 'Who' if any(corpus.is_name(w) for w in subject) or corpus.docs[doc]['source'] == 'kjv' else 'What'
    return f'{wh} {verb} {clean_span(rest)}?', clean_span(subject)


NAME_OF = re.compile(r"\b[Tt]he name of (the|his|her|their|that|this) ([a-z][a-z ]{1,30}?) (was|is|were) "
                     r"([A-Z][\w'’]+(?: [A-Z][\w'’]+)*)")


def ask_name_of(corpus: Corpus, doc: int, sentence: str) -> tuple[str, str] | None:
    m = NAME_OF.search(sentence)
    if not m:
        return None
    return f'What {m.group(3)} the name of {m.group(1)} {m.group(2)}?', m.group(4)


def leading_stripped(sentence: str) -> list[str]:
    words = sentence.rstrip('.!?;:').split()
    while words and words[0].lower().strip(',') in LEADING_WORDS:
        words = words[1:]
    return words


def in_situ(words: list[str], start: int, end: int, wh: str) -> str:
    """The sentence, or its clause around words[start:end] when long, with that span replaced by a question word."""
    lo, hi = 0, len(words)
    if len(words) > 20:
        lo = max((j for j in range(max(0, start - 10), start) if j == 0 or words[j - 1].endswith((',', ';', ':'))),
                 default=max(0, start - 8))
        hi = min((j for j in range(end, min(len(words), end + 8)) if words[j - 1].endswith((',', ';', ':'))),
                 default=min(len(words), end + 6))
    text = ' '.join(words[lo:start] + [wh] + words[end:hi]).strip(' ,;:')
    return text[0].upper() + text[1:] + '?' if len(text.split()) >= 4 else ''


def ask_number(corpus: Corpus, doc: int, sentence: str) -> tuple[str, str] | None:
    words = leading_stripped(sentence)
    for i, w in enumerate(words[:-1]):
        bare = w.strip(',;:')
        if bare.lower() in NUMBER_WORDS or re.fullmatch(r'\d[\d,.]*', bare):
            if i > 0 and words[i - 1].lower() == 'in' and re.fullmatch(r'1\d{3}|20\d\d', bare):
                return in_situ(words, i - 1, i + 1, 'in what year'), bare
            noun = words[i + 1].strip(',;:.')
            if noun.isalpha() and noun.islower() and len(noun) > 2 and noun not in PRONOUNS and bare == w:
                return in_situ(words, i, i + 2, f'how many {noun}'), bare
    return None


def ask_name(corpus: Corpus, doc: int, sentence: str) -> tuple[str, str] | None:
    words = leading_stripped(sentence)
    spans = []
    i = 1
    while i < len(words):
        if corpus.is_name(words[i].strip(",;:.'’s")):
            j = i
            while j + 1 < len(words) and corpus.is_name(words[j + 1].strip(",;:.'’s")) and not words[j].endswith(','):
                j += 1
            spans.append((i, j + 1))
            i = j + 1
        i += 1
    if not spans:
        return None
    rng = random.Random(sentence)
    spans = [sp for sp in spans if words[sp[0]].lower().strip(",;:.'’s") not in corpus.common_names or rng.random() < 0.15]
    if not spans:
        return None
    start, end = rng.choice(spans)
    answer = clean_span(words[start:end]).removesuffix("'s").removesuffix('’s')
    wh = 'whom' if words[start - 1].lower() in {'to', 'unto', 'with', 'by', 'from', 'of'} and \
        corpus.docs[doc]['source'] == 'kjv' else 'what'
    return in_situ(words, start, end, wh), answer


SENTENCE_RULES = (('subject', ask_subject), ('name-of', ask_name_of), ('number', ask_number), ('name', ask_name))


# ---- document-level rules: dictionary headwords and manual-page options ----

POS = re.compile(r'^[\s,]*(?:(?:n|v|a|adj|adv|pl|t|i|p|prep|conj|interj|pron|imp|pp|vb|abbr)\.\s*)+', re.I)
FIELD = re.compile(r'^\s*(?:\([A-Z][\w. ]*\)\s*|\d\.\s*|\([a-z]\)\s*)+')


def first_clause(text: str, most: int = 18) -> str:
    first = re.split(r'(?<=[.!?])\s', text.strip(), maxsplit=1)[0]
    words = first.split()
    if len(words) > most:
        cut = next((j for j in range(most - 1, 3, -1) if words[j].endswith((',', ';', ':'))), most - 1)
        words = words[:cut + 1]
    return clean_span(words)


def ask_definition(corpus: Corpus, doc: int, rng: random.Random) -> tuple[int, str, str] | None:
    """(paragraph, question, answer): what a dictionary's headword means, answered by its first definition."""
    d = corpus.docs[doc]
    head = d['id'].strip()
    body = d['text']
    if not body.lower().startswith(head.lower()) or not 1 <= len(head.split()) <= 3:
        return None
    rest = body[len(head):]
    rest = re.sub(r'^\s*(?:or [A-Z][\w -]*?)?,?\s*', '', rest, count=1) if rest.lstrip().startswith('or ') else rest
    rest = FIELD.sub('', POS.sub('', rest.lstrip(' ,\n')))
    answer = first_clause(rest)
    if len(answer.split()) < 3 or head.lower() in answer.lower().split()[:2]:
        return None
    word = head.lower() if head.isupper() or d['source'] == 'gcide' else head
    article = 'an' if word[0].lower() in 'aeiou' else 'a'
    template = rng.choice(('What is {a} {w}?', 'What does "{w}" mean?', 'What is meant by {w}?', 'Define {w}.',
                           'What is {w}?', 'What does {w} mean?'))
    return 0, template.format(a=article, w=word), answer


OPTION_BLOCK = re.compile(r'^ {7}(-[^\n]*?)(?: {2,}(\S[^\n]*))?\n((?: {8,}\S[^\n]*\n?)*)', re.M)


def third_person(desc: str) -> str:
    words = desc.split()
    verb = words[0]
    if verb == 'do':
        words[0] = 'does'
    elif re.fullmatch(r'[a-z]+', verb):
        words[0] = verb[:-1] + 'ies' if re.search(r'[^aeiou]y$', verb) else \
            verb + 'es' if verb.endswith(('s', 'sh', 'ch', 'x', 'z')) else verb + 's'
    return ' '.join(words)


def ask_option(corpus: Corpus, doc: int, rng: random.Random) -> tuple[int, str, str] | None:
    """(paragraph, question, answer): which option of a manual page does what, or what an option does."""
    d = corpus.docs[doc]
    blocks = []
    for p, para in enumerate(corpus.paras[doc]):
        m = OPTION_BLOCK.match(para + '\n')
        if m:
            desc = first_clause(' '.join(((m.group(2) or '') + ' ' + m.group(3)).split()), 14)
            if len(desc.split()) >= 2 and re.fullmatch(r'[a-z]+', desc.split()[0]) and desc.split()[0] not in \
                    {'or', 'and', 'the', 'a', 'an', 'if', 'when', 'this', 'see', 'same', 'like', 'with', 'for'}:
                blocks.append((p, m.group(1).strip(), desc))
    if not blocks:
        return None
    p, option, desc = rng.choice(blocks)
    cmd = d['id']
    first = option.split(',')[0].split('=')[0].split()[0]
    if rng.random() < 0.5:
        template = rng.choice(('Which option of {c} {d3}?', 'How do I {d} with {c}?', 'Which {c} option {d3}?',
                               'What option {d3} in {c}?'))
        return p, template.format(c=cmd, d=desc, d3=third_person(desc)), option
    template = rng.choice(('What does {o} do in {c}?', 'What does the {o} option of {c} do?', 'What is {c} {o} for?'))
    return p, template.format(o=first, c=cmd), desc


# ---- passages and examples ----

def passage(corpus: Corpus, doc: int, para: int, rng: random.Random, sentence: str | None = None) -> str:
    """Consecutive paragraphs around `para`, up to about one chunk, ending like a chunk cut at a paragraph."""
    paras = corpus.paras[doc]
    if len(paras[para]) > PASSAGE_CHARS * 1.3:
        text = paras[para]
        at = text.find(sentence) if sentence else 0
        start = max(0, at - rng.randint(0, PASSAGE_CHARS // 2))
        start = text.rfind(' ', 0, start) + 1 if start > 0 else 0
        end = text.rfind(' ', 0, start + PASSAGE_CHARS)
        end = end if end > max(at + len(sentence or ''), start) else start + PASSAGE_CHARS
        return text[start:end] + '\n\n'
    lo = hi = para
    budget = rng.randint(PASSAGE_CHARS // 3, PASSAGE_CHARS)
    size = len(paras[para])
    while True:
        grow = [i for i in (lo - 1, hi + 1) if 0 <= i < len(paras) and size + len(paras[i]) + 2 <= budget]
        if not grow:
            break
        i = rng.choice(grow)
        size += len(paras[i]) + 2
        lo, hi = min(lo, i), max(hi, i)
    return '\n\n'.join(paras[lo:hi + 1]) + '\n\n'


def random_passage(corpus: Corpus, rng: random.Random, source: str | None) -> tuple[int, str]:
    pool = corpus.by_source.get(source) if source and rng.random() < 0.6 else None
    doc = rng.choice(pool) if pool else rng.randrange(len(corpus.docs))
    return doc, passage(corpus, doc, rng.randrange(len(corpus.paras[doc])), rng)


def source_weight(source: str) -> float:
    return 3.0 if source == 'man' else 2.0 if source in ('kjv', 'python-docs') else 0.6 if source in DICTIONARIES \
        else 1.0


class DocPicker:
    """Draws the documents that answers come from: a source by weight, then one of its documents.

    `cap` is the most examples a document of up to CAP_CHARS characters may give; a longer one (a long manual page,
    a Python library chapter) may give more, in proportion, up to four times as many. `shard` (i, k) keeps the
    documents whose index is i modulo k, so that k generators running apart never share a document and the caps
    hold over all of them together. With neither, draws are exactly those of a plain weighted choice (the held-out
    set depends on that)."""

    CAP_CHARS = 5000

    def __init__(self, corpus: Corpus, cap: int | None = None, shard: tuple[int, int] = (0, 1)):
        i, k = shard
        pools = {s: [d for d in docs if d % k == i] for s, docs in corpus.by_source.items()}
        self.pools = {s: p for s, p in pools.items() if p}
        self.corpus = corpus
        self.cap = cap
        self.uses: Counter[int] = Counter()

    def cap_of(self, doc: int) -> float:
        assert self.cap is not None
        return self.cap * min(4.0, max(1.0, len(self.corpus.docs[doc]['text']) / self.CAP_CHARS))

    def empty(self) -> bool:
        return not self.pools

    def pick(self, rng: random.Random) -> int:
        sources = list(self.pools)
        return rng.choice(self.pools[rng.choices(sources, [source_weight(s) for s in sources])[0]])

    def used(self, doc: int, source: str) -> None:
        """Counts an example made from `doc`; a document that reached the cap is not drawn again."""
        self.uses[doc] += 1
        if self.cap is not None and self.uses[doc] >= self.cap_of(doc):
            pool = self.pools[source]
            pool.remove(doc)
            if not pool:
                del self.pools[source]


def single_question(corpus: Corpus, rng: random.Random, picker: DocPicker) -> \
        tuple[int, int, str, str, str, str | None] | None:
    """(doc, paragraph, question, answer, rule, sentence) from one document the picker draws."""
    doc = picker.pick(rng)
    source = corpus.docs[doc]['source']
    if source in DICTIONARIES and rng.random() < 0.7 or source == 'man' and rng.random() < 0.8:
        made = (ask_definition if source in DICTIONARIES else ask_option)(corpus, doc, rng)
        if made:
            return doc, made[0], made[1], made[2], 'definition' if source in DICTIONARIES else 'option', None
    para = rng.randrange(len(corpus.paras[doc]))
    cands = sentences(corpus.paras[doc][para])
    rng.shuffle(cands)
    for s in cands[:4]:
        for name, rule in rng.sample(SENTENCE_RULES, len(SENTENCE_RULES)):
            made = rule(corpus, doc, s)
            if made and made[0] and made[1] and made[1] in s and made[1].lower() not in made[0].lower():
                return doc, para, made[0], made[1], name, s
    return None


def bridge_question(corpus: Corpus, rng: random.Random, picker: DocPicker) -> \
        tuple[list[tuple[int, str]], str, str, str, str] | None:
    """Passages (A, B), a question about B that names B's entity only by what A says of it, the answer, the rule,
    and B's sentence the question was made from."""
    for _ in range(8):
        found = single_question(corpus, rng, picker)
        if not found or found[4] not in ('subject', 'name', 'number', 'name-of'):
            continue
        doc, para, question, answer, rule, sentence = found
        names = [w for w in re.findall(r"(?<![\w/-])[A-Z]\w+(?![\w/-])", question)
                 if w in corpus.subject_index and w not in answer]
        if not names:
            continue
        entity = rng.choice(names)
        hops = [(d, s) for d, s in corpus.subject_index[entity] if s != sentence]
        if not hops:
            continue
        doc_a, sent_a = rng.choice(hops)
        subject, verb, rest = subject_split(corpus, sent_a)  # type: ignore[misc]
        who = 'who' if corpus.docs[doc_a]['source'] == 'kjv' else 'that'
        description = f'the one {who} {verb} {clean_span(rest[:9])}'
        new_q = re.sub(rf'(?:\b[Tt]he )?(?<![\w/-]){re.escape(entity)}(?![\w/-])', description, question, count=1)
        new_q = new_q[0].upper() + new_q[1:]
        para_a = next(i for i, p in enumerate(corpus.paras[doc_a]) if sent_a in p)
        pieces = [(doc_a, passage(corpus, doc_a, para_a, rng, sent_a)), (doc, passage(corpus, doc, para, rng, sentence))]
        if answer in pieces[1][1] and sent_a.split()[0] in pieces[0][1]:
            return pieces, new_q, answer, f'bridge-{rule}', sentence  # type: ignore[return-value]
    return None


def assemble(corpus: Corpus, rng: random.Random, answer_pieces: list[tuple[int, str]]) -> list[str]:
    """The answer passages among distractors, grouped by document in document order, groups shuffled."""
    budget = rng.randint(sum(len(p) for _, p in answer_pieces), CONTEXT_CHARS)
    groups: dict[int, list[str]] = {}
    for d, p in answer_pieces:
        groups.setdefault(d, []).append(p)
    size = sum(len(p) for _, p in answer_pieces)
    source = corpus.docs[answer_pieces[-1][0]]['source']
    for _ in range(6):
        d, p = random_passage(corpus, rng, source)
        if size + len(p) > budget or d in groups:
            continue
        groups[d] = [p]
        size += len(p)
    order = list(groups.values())
    rng.shuffle(order)
    return [p for g in order for p in g]


# ---- counterfactual answers ----

YEAR = re.compile(r'1\d{3}|20\d\d')
CARDINALS = ('two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten', 'eleven', 'twelve', 'twenty',
             'thirty', 'forty', 'fifty')


def answer_kind(rule: str, question: str, answer: str) -> str:
    """What an answer may be swapped for: answers of the same kind read the same in the sentence."""
    base = rule.removeprefix('bridge-')
    if base in ('name', 'name-of'):
        return 'name'
    if base == 'number':
        return 'year' if YEAR.fullmatch(answer) and 'what year' in question else \
            'digits' if answer[0].isdigit() else 'number-word'
    if base == 'subject':
        return 'subject-who' if question.startswith('Who') else 'subject-what'
    if base == 'option':
        return 'option-flag' if answer.startswith('-') else 'option-does'
    return base  # definition


def other_number(kind: str, answer: str, rng: random.Random) -> str | None:
    """Another number of the same form: a year for a year, as many digits for digits, a word for a word."""
    if kind == 'year':
        return str(rng.choice([y for y in range(1450, 2030) if str(y) != answer]))
    if kind == 'digits':
        digits = sum(c.isdigit() for c in answer)
        value = rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10 ** digits)
        text = f'{value:,}' if ',' in answer else str(value)
        return text if text != answer else None
    lower = answer.lower()
    if lower not in CARDINALS:  # hundred, thousand: no same-sized word to swap in
        return None
    word = rng.choice([w for w in CARDINALS if w != lower])
    return word.capitalize() if answer[0].isupper() else word


def span_pattern(span: str) -> re.Pattern[str]:
    """The span as a whole: not inside a longer word, number or option."""
    return re.compile(rf'(?<![\w-]){re.escape(span)}(?![\w-])')


def match_case(old: str, new: str) -> str:
    """The new span capitalized where the old one was (a subject opening a sentence), names left as written."""
    if old[:1].isupper() and new[:1].islower():
        return new[0].upper() + new[1:]
    if old[:1].islower() and new[:1].isupper() and new.split()[0].lower() in DETERMINERS:
        return new[0].lower() + new[1:]
    return new


class Counterfactuals:
    """Swaps an example's answer for a span of the same kind that another example of the same source answered.

    Spans come from the examples made so far (each kind keeps a bounded pool), numbers are made up; the swap is
    made in every answer passage, consistently, except for numbers, where only the asked sentence changes (the
    same number elsewhere usually counts something else)."""

    POOL = 2000

    def __init__(self) -> None:
        self.pools: dict[tuple[str, str], list[tuple[str, int]]] = {}

    def remember(self, kind: str, source: str, answer: str, doc: int, rng: random.Random) -> None:
        pool = self.pools.setdefault((kind, source), [])
        if len(pool) < self.POOL:
            pool.append((answer, doc))
        else:
            pool[rng.randrange(self.POOL)] = (answer, doc)

    def replacement(self, kind: str, source: str, answer: str, doc: int, rng: random.Random) -> str | None:
        if kind in ('year', 'digits', 'number-word'):
            return other_number(kind, answer, rng)
        pool = self.pools.get((kind, source), [])
        for _ in range(min(8, len(pool))):
            span, from_doc = rng.choice(pool)
            if from_doc != doc and span.lower() != answer.lower():
                return span
        return None

    def swap(self, pieces: list[tuple[int, str]], question: str, answer: str, kind: str, new: str,
             sentence: str | None) -> tuple[list[tuple[int, str]], str] | None:
        """(pieces, answer) with `answer` replaced by `new`, or None where the swap would not read as one answer."""
        new = match_case(answer, new)
        old_pattern, new_pattern = span_pattern(answer), span_pattern(new)
        if old_pattern.search(question) or new_pattern.search(question) or \
                any(new_pattern.search(text) for _, text in pieces):
            return None
        out = []
        for d, text in pieces:
            if kind in ('year', 'digits', 'number-word'):
                if sentence and sentence in text:
                    text = text.replace(sentence, old_pattern.sub(lambda _: new, sentence, count=1), 1)
            else:
                text = old_pattern.sub(lambda _: new, text)
            out.append((d, text))
        if not any(new_pattern.search(text) for _, text in out):
            return None
        return out, new


# ---- question paraphrases ----

DEFINITION_Q = re.compile(r'(?:What is (?:an? )?|What does "?|What is meant by |Define )(?P<w>.+?)(?:"? mean)?[?.]')
DEFINITION_FORMS = ('What is the meaning of {w}?', 'Give the meaning of {w}.', 'How is {w} defined?',
                    'What does the word {w} mean?', 'Explain {w}.', 'What is {w}, according to the text?')
OPTION_QS = (re.compile(r'Which option of (?P<c>\S+) (?P<d3>.+)\?'), re.compile(r'Which (?P<c>\S+) option (?P<d3>.+)\?'),
             re.compile(r'What option (?P<d3>.+) in (?P<c>\S+)\?'), re.compile(r'How do I (?P<d>.+) with (?P<c>\S+)\?'),
             re.compile(r'What does (?P<o>-\S+) do in (?P<c>\S+)\?'),
             re.compile(r'What does the (?P<o>-\S+) option of (?P<c>\S+) do\?'),
             re.compile(r'What is (?P<c>\S+) (?P<o>-\S+) for\?'))
OPTION_FORMS = {
    'd3': ('Which flag of {c} {d3}?', 'In {c}, which option {d3}?', 'What is the {c} option that {d3}?',
           'Which command-line option of {c} {d3}?'),
    'd': ('How can I {d} with {c}?', 'Using {c}, how do I {d}?', 'What option do I give {c} to {d}?'),
    'o': ('What is the effect of {o} in {c}?', 'In {c}, what does {o} do?', 'What does {c} {o} do?',
          'What happens when {c} is given {o}?'),
}
NAME_OF_Q = re.compile(r'What (?P<v>was|is|were) the name of (?P<x>.+)\?')
NAME_OF_FORMS = ('What {v} {x} called?', 'By what name {v} {x} known?', 'What name did {x} have?')
SUBJECT_Q = re.compile(r'(?P<wh>Who|What) (?P<rest>.+)\?')
SUBJECT_FORMS = {'Who': ('Who was it that {rest}?', 'Which person {rest}?', 'Name the one who {rest}.'),
                 'What': ('What is it that {rest}?', 'Name what {rest}.')}
PREFIXES = ('According to the text, ', 'Based on the passages, ', 'In the documents above, ', 'From the context, ')
LOWER_OPENERS = {'what', 'who', 'whom', 'which', 'how', 'where', 'when', 'why', 'define', 'give', 'explain', 'name',
                 'in', 'by', 'using'} | DETERMINERS


# Words a question may use in place of the passage's, so that answering takes more than matching its words: the
# natural questions users ask seldom repeat a sentence of the document. Words that are as often nouns or participles
# (set, ends, use, display) are left out: a swap must keep the question grammatical.
SYNONYMS = {
    'went': ('travelled', 'journeyed', 'moved'), 'came': ('arrived', 'returned'), 'said': ('stated', 'declared'),
    'spake': ('spoke', 'said'), 'took': ('seized', 'carried'), 'gave': ('handed', 'granted'),
    'saw': ('noticed', 'beheld'), 'made': ('created', 'produced'), 'called': ('named',), 'dwelt': ('lived', 'stayed'),
    'begat': ('fathered',), 'answered': ('replied', 'responded'), 'sent': ('dispatched',),
    'brought': ('carried', 'fetched'), 'arose': ('rose', 'got up'), 'slew': ('killed',), 'smote': ('struck',),
    'departed': ('left',), 'man': ('person', 'fellow'), 'woman': ('lady',), 'king': ('ruler', 'monarch'),
    'city': ('town',), 'land': ('country',), 'wife': ('spouse',), 'children': ('offspring',), 'sons': ('boys',),
    'people': ('folk',), 'print': ('output', 'display', 'show'), 'prints': ('outputs', 'displays', 'shows'),
    'shows': ('displays', 'prints'), 'displays': ('shows', 'prints'), 'uses': ('employs',),
    'create': ('make', 'generate'), 'creates': ('makes', 'generates'), 'remove': ('delete',), 'removes': ('deletes',),
    'ignore': ('skip', 'disregard'), 'ignores': ('skips', 'disregards'), 'allows': ('lets', 'permits'),
    'requires': ('needs',), 'contains': ('holds', 'includes'), 'begin': ('start',), 'begins': ('starts',),
    'large': ('big',), 'small': ('little',), 'quickly': ('fast',), 'write': ('output',), 'writes': ('outputs',),
    'specified': ('given',), 'specify': ('give',),
}


def reword(question: str, rng: random.Random, most: int = 2) -> str:
    """The question with up to `most` of its lower-case words swapped for a synonym (names and options stay)."""
    words = question.split(' ')
    spots = [i for i, w in enumerate(words) if w.rstrip('?.,;:').lower() in SYNONYMS and not w[:1].isupper()]
    for i in rng.sample(spots, min(most, len(spots))):
        bare = words[i].rstrip('?.,;:')
        words[i] = rng.choice(SYNONYMS[bare.lower()]) + words[i][len(bare):]
    return ' '.join(words)


def rule_paraphrase(question: str, rule: str, rng: random.Random) -> str | None:
    """The rule's question in other words, where its form is recognized."""
    base = rule.removeprefix('bridge-')
    if base == 'definition' and (m := DEFINITION_Q.fullmatch(question)):
        return rng.choice(DEFINITION_FORMS).format(**m.groupdict())
    if base == 'option':
        for pattern in OPTION_QS:
            if m := pattern.fullmatch(question):
                slot = next(k for k in ('d3', 'd', 'o') if m.groupdict().get(k))
                return rng.choice(OPTION_FORMS[slot]).format(**m.groupdict())
    if base == 'name-of' and (m := NAME_OF_Q.fullmatch(question)):
        form = rng.choice(NAME_OF_FORMS)
        return None if '{v}' not in form and m['v'] != 'was' else form.format(**m.groupdict())
    if base == 'subject' and (m := SUBJECT_Q.fullmatch(question)):
        return rng.choice(SUBJECT_FORMS[m['wh']]).format(**m.groupdict())
    return None


def paraphrase(question: str, rule: str, rng: random.Random) -> str:
    """Another wording: the rule's own paraphrase, or the question behind a phrase that points at the context."""
    if rng.random() < 0.5:
        question = reword(question, rng)
    if rng.random() < 0.6 and (other := rule_paraphrase(question, rule, rng)):
        return other
    prefix = rng.choice(PREFIXES)
    if question.split()[0].lower() in LOWER_OPENERS:
        return prefix + question[0].lower() + question[1:]
    return prefix.rstrip(', ') + ': ' + question


# ---- examples ----

@dataclass
class Options:
    """Training-only variations; the defaults make natural examples, as the held-out set needs."""
    counterfactual: float = 0.0  # share of examples whose answer is swapped (Counterfactuals)
    paraphrase: float = 0.0  # share of questions asked in other words
    doc_cap: int | None = None  # the most examples one document gives (DocPicker: more for long documents)
    shard: tuple[int, int] = (0, 1)  # (i, k): only answer documents whose index is i modulo k


def make_example(corpus: Corpus, rng: random.Random, bridge_share: float, picker: DocPicker,
                 options: Options, swaps: Counterfactuals) -> Example | None:
    sentence: str | None
    if rng.random() < bridge_share and (made := bridge_question(corpus, rng, picker)):
        pieces, question, answer, rule, sentence = made
        kind, doc = 'bridge', pieces[1][0]
    else:
        found = single_question(corpus, rng, picker)
        if not found:
            return None
        doc, para, question, answer, rule, sentence = found
        pieces = [(doc, passage(corpus, doc, para, rng, sentence))]
        if answer not in pieces[0][1]:
            return None
        kind = 'single'
    source = corpus.docs[doc]['source']
    swapped = False
    if options.counterfactual > 0:
        span_kind = answer_kind(rule, question, answer)
        if rng.random() < options.counterfactual and \
                (new := swaps.replacement(span_kind, source, answer, doc, rng)) and \
                (done := swaps.swap(pieces, question, answer, span_kind, new, sentence)):
            pieces, swapped = done[0], True
            swaps.remember(span_kind, source, answer, doc, rng)
            answer = done[1]
        else:
            swaps.remember(span_kind, source, answer, doc, rng)
    if options.paraphrase > 0 and rng.random() < options.paraphrase:
        question = paraphrase(question, rule, rng)
    picker.used(doc, source)
    return Example(assemble(corpus, rng, pieces), question, answer, kind, rule, source, doc, swapped)


def make_examples(corpus: Corpus, n: int, seed: int, bridge_share: float,
                  options: Options | None = None) -> list[Example]:
    """n examples (fewer where a document cap leaves no document to draw), the same for the same seed."""
    options = options or Options()
    rng = random.Random(seed)
    picker = DocPicker(corpus, options.doc_cap, options.shard)
    swaps = Counterfactuals()
    out: list[Example] = []
    while len(out) < n and not picker.empty():
        ex = make_example(corpus, rng, bridge_share, picker, options, swaps)
        if ex:
            out.append(ex)
    return out


def load_docs(paths: list[str]) -> list[dict[str, str]]:
    """The language-model corpus packs (corpus.jsonl.xz, man-pages.jsonl.xz): one JSON document a line."""
    docs = []
    for path in paths:
        with lzma.open(path, 'rt', encoding='utf-8') as f:
            docs.extend(json.loads(line) for line in f)
    return docs

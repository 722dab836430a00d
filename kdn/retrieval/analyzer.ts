import { stemmer } from 'stemmer';
import { eng } from 'stopword';

/**
 * How chunk texts and questions become search terms. The same analysis runs on both sides, so an inflected word in
 * a question ("recursively") meets the stem of the word in the text ("--recursive").
 *
 * - Words are lower-cased, split at hyphens and stemmed (Porter); English stop-words and one-letter words are
 *   dropped, so boilerplate full of common words does not outscore the chunk that holds the question's terms.
 * - Command-line options are terms of their own, case kept (`-S` is not `-s`): `--ignore-case` gives the term
 *   `--ignore-case` plus the stems of `ignore` and `case`; `--sort=WORD` gives `--sort`, `sort` and `word`.
 */

/** Words a question is phrased with that say nothing about which passage answers it. */
const QUESTION_WORDS = ['does', 'doing', 'done', 'i', 'why', 'when', 'whom', 'whose', 'tell', 'please', 'mean', 'means'];
const STOP_WORDS = new Set([...eng, ...QUESTION_WORDS]);

/** An option (`-x`, `-9`, `--long-name`) at a word start, or a word (letters and digits, inner apostrophes). */
const TOKEN = /(?<![\p{L}\p{N}])--?[\p{L}\p{N}][\p{L}\p{N}_-]*|[\p{L}\p{N}]+(?:['’][\p{L}]+)*/gu;

/** Splits text into raw tokens: options keep their dashes, everything else is words. */
export function tokenize(text: string): string[] {
  return text.match(TOKEN) ?? [];
}

/** The index terms of one raw token (none for a stop-word). */
export function termsOf(token: string): string[] {
  if (token.startsWith('-')) {
    const option = token.replace(/-+$/, '');
    return [option, ...termsOf(option.replace(/^-+/, '').replace(/[-_]/g, ' ').trim())].filter(Boolean);
  }
  const out: string[] = [];
  for (const part of token.toLowerCase().split(/[\s_-]+/)) {
    const word = part.replace(/['’]s$/, '').replace(/['’]/g, '');
    if (word.length < 2 || STOP_WORDS.has(word)) continue;
    out.push(/^\p{N}+$/u.test(word) ? word : stemmer(word));
  }
  return out;
}

/** Answer scoring as reading-comprehension benchmarks report it (SQuAD): exact match and token F1 after normalizing. */

/** Lower case, punctuation and the articles a/an/the removed, whitespace collapsed, as words. */
export function answerWords(text: string): string[] {
  return text
    .toLowerCase()
    .replace(/[\p{P}\p{S}]/gu, ' ')
    .split(/\s+/)
    .filter((w) => w !== '' && w !== 'a' && w !== 'an' && w !== 'the');
}

export function exactMatch(prediction: string, truth: string): number {
  return answerWords(prediction).join(' ') === answerWords(truth).join(' ') ? 1 : 0;
}

export function tokenF1(prediction: string, truth: string): number {
  const p = answerWords(prediction);
  const t = answerWords(truth);
  if (p.length === 0 || t.length === 0) return p.length === t.length ? 1 : 0;
  const counts = new Map<string, number>();
  for (const w of t) counts.set(w, (counts.get(w) ?? 0) + 1);
  let common = 0;
  for (const w of p) {
    const n = counts.get(w) ?? 0;
    if (n > 0) {
      common++;
      counts.set(w, n - 1);
    }
  }
  if (common === 0) return 0;
  const precision = common / p.length;
  const recall = common / t.length;
  return (2 * precision * recall) / (precision + recall);
}

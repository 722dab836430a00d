const SUBJECTS = [
  'The river',
  'A miller',
  'The old bridge',
  'Every harbour',
  'A lighthouse',
  'The north wind',
  'Our village',
  'The grain barge',
];
const VERBS = ['carries', 'watches', 'remembers', 'guards', 'feeds', 'crosses', 'lights', 'measures'];
const OBJECTS = [
  'water to the sea',
  'the ships at night',
  'the spring floods',
  'the mills by the bank',
  'salt and timber',
  'the tides twice a day',
];

/** A deterministic English-like text of `sentences` numbered sentences, so chunks differ from each other. */
export function corpusText(sentences: number, seed = 0): string {
  const out: string[] = [];
  for (let i = 0; i < sentences; i++) {
    const n = i + seed * 7919;
    out.push(`${SUBJECTS[n % SUBJECTS.length]} ${VERBS[(n * 3) % VERBS.length]} ${OBJECTS[(n * 5) % OBJECTS.length]} in year ${1700 + n}.`);
  }
  return out.join(' ');
}

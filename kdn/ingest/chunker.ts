import type { Tokenizer } from '../../engine-adapter/types.ts';

/** One knowledge chunk: a slice [start, start + tokenIds.length) of the document's token array. */
export interface Chunk {
  index: number;
  start: number;
  tokenIds: number[];
  /** The chunk's text, for retrieval and display. */
  text: string;
}

type BoundaryKind = 'paragraph' | 'sentence' | 'none';

const PARAGRAPH_END = /\n[ \t]*\n\s*$/;
const SENTENCE_END = /[.!?]["'”’)\]]*\s*$/;
/** Fraction of the budget a chunk must reach before a boundary may end it, so chunks are not tiny slivers. */
const MIN_FILL = 0.25;
/** Tokens of context looked at on each side of a cut to classify it. */
const LOOK = 3;

/**
 * Splits a tokenized document into chunks of at most `budget` tokens. The document is tokenized once by the
 * caller and only the token array is cut, so the chunks concatenate to exactly the document's tokens (tokenizing
 * chunk texts separately would not). Each cut is at the last paragraph boundary in the window when there is one,
 * else at the last sentence boundary, else at the budget.
 */
export function chunkTokens(tokenizer: Pick<Tokenizer, 'decode'>, tokenIds: readonly number[], budget: number): Chunk[] {
  if (!Number.isInteger(budget) || budget < 1) throw new RangeError(`chunk budget must be a positive integer, got ${budget}`);
  const pieces = tokenIds.map((id) => tokenizer.decode([id], { skipSpecialTokens: false }));
  const chunks: Chunk[] = [];
  let start = 0;
  while (start < tokenIds.length) {
    const end = start + budget >= tokenIds.length ? tokenIds.length : pickCut(pieces, start, budget);
    const ids = tokenIds.slice(start, end);
    chunks.push({ index: chunks.length, start, tokenIds: ids, text: tokenizer.decode(ids, { skipSpecialTokens: false }) });
    start = end;
  }
  return chunks;
}

function pickCut(pieces: string[], start: number, budget: number): number {
  const limit = start + budget;
  const earliest = start + Math.max(1, Math.ceil(budget * MIN_FILL));
  let sentence = -1;
  for (let cut = limit; cut >= earliest; cut--) {
    const kind = boundaryAt(pieces, cut);
    if (kind === 'paragraph') return cut;
    if (kind === 'sentence' && sentence < 0) sentence = cut;
  }
  return sentence > 0 ? sentence : limit;
}

/** Classifies the cut between token cut-1 and token cut from the text around it. */
function boundaryAt(pieces: string[], cut: number): BoundaryKind {
  const before = pieces.slice(Math.max(0, cut - LOOK), cut).join('');
  const after = pieces[cut] ?? '';
  if (PARAGRAPH_END.test(before)) return 'paragraph';
  if (SENTENCE_END.test(before) && (/\s$/.test(before) || /^\s/.test(after))) return 'sentence';
  return 'none';
}

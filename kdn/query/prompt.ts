/**
 * The one prompt format of POST /v1/query: the question follows the knowledge chunks. The same text is used by
 * inject and recompute, so both modes see the same tokens.
 */
export function questionPrompt(question: string): string {
  return `\n\nQuestion: ${question.trim()}\nAnswer:`;
}

/** Where a generated answer ends: the model starting another question. */
export const ANSWER_STOP_STRINGS = ['\nQuestion:', '\n\n\n'];

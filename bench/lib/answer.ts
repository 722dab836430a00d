/** Greedy answers and teacher-forced logits over a session that already holds a document's context. */
import type { Session } from '../../engine-adapter/index.ts';
import { argmax } from './logits.ts';

export interface GreedyAnswer {
  tokens: number[];
  /** Logits row that chose each answer token, [answer tokens][vocab]. */
  logits: Float32Array[];
}

/**
 * Prefills `prompt` and decodes `n` tokens greedily (no stop token: answers always have `n` tokens, so they compare
 * position by position). The rows are the logits teacher-forced on this very answer.
 */
export async function greedyAnswer(session: Session, prompt: number[], n: number): Promise<GreedyAnswer> {
  return greedyFrom(session, await session.prefill(prompt, { logits: 'last' }), n);
}

/** greedyAnswer for a session whose prompt is already in, given the prompt's last logits. */
export async function greedyFrom(session: Session, promptLogits: Float32Array, n: number): Promise<GreedyAnswer> {
  const logits = [promptLogits];
  const tokens = [argmax(logits[0]!)];
  while (tokens.length < n) {
    logits.push(await session.prefill([tokens.at(-1)!], { logits: 'last' }));
    tokens.push(argmax(logits.at(-1)!));
  }
  return { tokens, logits };
}

/**
 * Logits at each answer position with `forced` fed as the answer, from a session holding the context followed by
 * `prompt`: row 0 is the prompt's last logits (given, they do not depend on the answer), rows 1.. come from one
 * prefill of forced[0..n-2].
 */
export async function teacherForced(session: Session, firstRow: Float32Array, forced: number[], vocab: number): Promise<Float32Array[]> {
  const rows = [firstRow];
  if (forced.length < 2) return rows;
  const all = await session.prefill(forced.slice(0, -1), { logits: 'all' });
  for (let i = 0; i < forced.length - 1; i++) rows.push(all.subarray(i * vocab, (i + 1) * vocab));
  return rows;
}

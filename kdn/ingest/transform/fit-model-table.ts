import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { kvBeforeRope, loadModelConfig } from '../../../engine-adapter/index.ts';
import type { Engine } from '../../../engine-adapter/types.ts';
import { fitTransformTable, type TransformTable } from '../../../storage/kv-object/index.ts';
import type { KVTensors } from '../../../storage/kv-object/types.ts';
import { sinkToken } from '../../sink-token.ts';

/**
 * The calibration text transform tables are fitted on: shipped with KDN, mixed in style (narrative, archaic
 * prose, definitions, technical docs, code, tables, dialogue), so a table never carries any tenant's content
 * and every tenant's objects are encoded with the same table.
 */
export const CALIBRATION_TEXT = join(import.meta.dirname, 'calibration.txt');

/** Longest calibration sequence; positions beyond what chunks see add nothing and cost quadratic attention. */
const MAX_CALIBRATION_TOKENS = 2048;

/**
 * Computes calibration KV for `text` on the engine, as prefix-chained ingest does ([sink] + text in one
 * sequence), with keys rotated back to before RoPE.
 */
export async function calibrationKV(engine: Engine, text: string): Promise<KVTensors> {
  const limit = Math.min(MAX_CALIBRATION_TOKENS, engine.info.maxPositionEmbeddings - 1);
  const ids = engine.tokenizer.encode(text, { addSpecialTokens: false }).slice(0, limit);
  const session = engine.createSession({ capacity: ids.length + 1 });
  try {
    await session.prefill([sinkToken(engine), ...ids], { logits: 'none' });
    const kv = await session.exportKV({ start: 1, end: session.length });
    return kvBeforeRope(kv, await loadModelConfig(engine.info.path));
  } finally {
    session.dispose();
  }
}

/** Fits the engine's model's transform table on `text` (the shipped calibration text by default). */
export async function fitModelTable(engine: Engine, text?: string): Promise<TransformTable> {
  const kv = await calibrationKV(engine, text ?? (await readFile(CALIBRATION_TEXT, 'utf8')));
  return fitTransformTable([kv], engine.info.fingerprint);
}

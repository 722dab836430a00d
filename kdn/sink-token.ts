import { KdnError } from '../common/errors.ts';
import type { Engine } from '../engine-adapter/types.ts';

/** What the sink token needs of an engine (a benchmark's engine has no more than these of an Engine's parts). */
export type SinkEngine = Pick<Engine, 'info' | 'tokenizer'>;

/**
 * The token every context starts with: the model's BOS, which attention uses as a sink. Chunk KV is always computed
 * after it, so injected chunks see the same first token the model was trained with. Models without a BOS (Qwen)
 * use their first end-of-text token, which they see at document starts.
 */
export function sinkToken(engine: SinkEngine): number {
  const id = engine.tokenizer.bosTokenId ?? engine.tokenizer.eosTokenIds[0];
  if (id === undefined) {
    throw new KdnError('MODEL_UNSUPPORTED', `model at ${engine.info.path} has neither a BOS nor an EOS token`, {
      hint: 'set bos_token in tokenizer_config.json',
    });
  }
  return id;
}

/**
 * Tokenizes and chunks documents for ingest on its own thread: a few MiB of text take seconds of CPU, which on the
 * event loop would hold every request. Started by tokenize-worker.js with the model directory as workerData.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { toKdnError } from '../../common/errors.ts';
import { loadModelConfig, loadTokenizer } from '../../engine-adapter/index.ts';
import { chunkTokens } from './chunker.ts';
import type { TokenizeReply, TokenizeRequest } from './tokenize-protocol.ts';

const port = parentPort!;
const modelDir = workerData as string;
// The engine's own tokenizer: same files, same model config.
const tokenizer = await loadTokenizer(modelDir, await loadModelConfig(modelDir));

port.on('message', ({ id, text, budget }: TokenizeRequest) => {
  let reply: TokenizeReply;
  try {
    const ids = tokenizer.encode(text, { addSpecialTokens: false });
    const chunks = chunkTokens(tokenizer, ids, budget).map((c) => ({ index: c.index, start: c.start, end: c.start + c.tokenIds.length, text: c.text }));
    reply = { id, tokenIds: Uint32Array.from(ids), chunks };
  } catch (err) {
    const e = toKdnError(err);
    reply = { id, error: { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) } };
  }
  port.postMessage(reply, 'tokenIds' in reply ? [reply.tokenIds.buffer as ArrayBuffer] : []);
});

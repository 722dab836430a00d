/**
 * The CPU-heavy steps of ingest on their own thread: tokenizing and chunking a document (a few MiB of text take
 * seconds) and encoding chunk KV objects (quantizing and hashing tens of MiB for large models), which on the event
 * loop would hold every request. Started by ingest-worker.js with the model directory as workerData.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { toKdnError } from '../../common/errors.ts';
import { loadModelConfig, loadTokenizer, type Tokenizer } from '../../engine-adapter/index.ts';
import { encodeKVObject } from '../../storage/kv-object/index.ts';
import { chunkTokens } from './chunker.ts';
import type { IngestReply, IngestRequest } from './ingest-protocol.ts';

const port = parentPort!;
const modelDir = workerData as string;
let tokenizer: Promise<Tokenizer> | undefined;

/** The engine's own tokenizer (same files, same model config), loaded on first use. */
function tokenizerOf(): Promise<Tokenizer> {
  tokenizer ??= loadModelConfig(modelDir).then((config) => loadTokenizer(modelDir, config));
  return tokenizer;
}

async function perform(request: IngestRequest): Promise<{ reply: IngestReply; transfer: ArrayBuffer[] }> {
  if (request.op === 'encode') {
    const buffer = encodeKVObject(request.tensors, request.meta);
    const bytes = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
    return { reply: { id: request.id, op: 'encode', bytes }, transfer: whole ? [bytes.buffer as ArrayBuffer] : [] };
  }
  const t = await tokenizerOf();
  const ids = t.encode(request.text, { addSpecialTokens: false });
  const chunks = chunkTokens(t, ids, request.budget).map((c) => ({ index: c.index, start: c.start, end: c.start + c.tokenIds.length, text: c.text }));
  const tokenIds = Uint32Array.from(ids);
  return { reply: { id: request.id, op: 'tokenize', tokenIds, chunks }, transfer: [tokenIds.buffer as ArrayBuffer] };
}

port.on('message', (request: IngestRequest) => {
  perform(request).then(
    ({ reply, transfer }) => port.postMessage(reply, transfer),
    (err: unknown) => {
      const e = toKdnError(err);
      port.postMessage({ id: request.id, error: { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) } } satisfies IngestReply);
    },
  );
});

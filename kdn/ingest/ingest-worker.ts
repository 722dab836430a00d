/**
 * The CPU-heavy steps of ingest on their own thread: tokenizing and chunking a document (a few MiB of text take
 * seconds) and encoding chunk KV objects (unrotating keys, quantizing and hashing tens of MiB for large models), which on the event
 * loop would hold every request. Started by ingest-worker.js with the model directory as workerData.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { toWireError } from '../../common/errors.ts';
import { kvBeforeRope, loadModelConfig, loadTokenizer, type ModelConfig, type Tokenizer } from '../../engine-adapter/index.ts';
import { codecEntry, encodeKVObject, parseTransformTable, transformTables } from '../../storage/kv-object/index.ts';
import { chunkTokens } from './chunker.ts';
import type { IngestReply, IngestRequest } from './ingest-protocol.ts';

const port = parentPort!;
const modelDir = workerData as string;
let tokenizer: Promise<Tokenizer> | undefined;
let config: Promise<ModelConfig> | undefined;

function configOf(): Promise<ModelConfig> {
  config ??= loadModelConfig(modelDir);
  return config;
}

/** The engine's own tokenizer (same files, same model config), loaded on first use. */
function tokenizerOf(): Promise<Tokenizer> {
  tokenizer ??= configOf().then((c) => loadTokenizer(modelDir, c));
  return tokenizer;
}

async function perform(request: IngestRequest): Promise<{ reply: IngestReply; transfer: ArrayBuffer[] }> {
  if (request.op === 'table') {
    transformTables.register(parseTransformTable(request.bytes));
    return { reply: { id: request.id, op: 'table' }, transfer: [] };
  }
  if (request.op === 'encode') {
    // Codecs that decorrelate keys take them before RoPE; unrotating here keeps that work off the event loop.
    const tensors = codecEntry(request.meta.codec.name).keysBeforeRope ? kvBeforeRope(request.tensors, await configOf()) : request.tensors;
    const buffer = encodeKVObject(tensors, request.meta);
    const bytes = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
    return { reply: { id: request.id, op: 'encode', bytes }, transfer: whole ? [bytes.buffer as ArrayBuffer] : [] };
  }
  const t = await tokenizerOf();
  const ids = t.encode(request.text, { addSpecialTokens: false });
  const chunks = chunkTokens(t, ids, request.budget).map((c) => ({
    index: c.index,
    start: c.start,
    end: c.start + c.tokenIds.length,
    text: c.text,
  }));
  const tokenIds = Uint32Array.from(ids);
  return { reply: { id: request.id, op: 'tokenize', tokenIds, chunks }, transfer: [tokenIds.buffer as ArrayBuffer] };
}

port.on('message', (request: IngestRequest) => {
  perform(request).then(
    ({ reply, transfer }) => port.postMessage(reply, transfer),
    (err: unknown) => {
      port.postMessage({ id: request.id, error: toWireError(err) } satisfies IngestReply);
    },
  );
});

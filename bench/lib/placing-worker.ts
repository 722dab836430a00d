/**
 * The engine thread's side of the overlapped path without an engine, for bench/delivery.ts's shm-placed stages.
 * Routed objects arrive as on the engine's thread (engine-adapter/worker/block-channel.ts), and each block is copied
 * into a staging buffer as the WebGPU injector copies it into mapped memory (one that came as where it lies in a
 * same-host file is read from there first, on this thread): the lowest layer first among the blocks
 * that have arrived (engine-adapter/layer-order.ts, as Session places them), or each object's blocks as they come
 * (the baseline), to time when every object's layer 0, and the last layer, were placed. Blocks announced before they
 * were verified (storage LayerVerification) count towards layer 0 only once verified too, as the question's gate
 * counts them. Started by placing-worker.js.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { writeInLayerOrder, type LayerSink } from '../../engine-adapter/layer-order.ts';
import { BlockChannel } from '../../engine-adapter/worker/block-channel.ts';
import { readBlockSource } from '../../storage/kv-object/index.ts';
import type { KVBlock } from '../../storage/kv-object/types.ts';
import type { PlaceRequest, Placed, PlacingReply } from './placing-thread.ts';

/** The injector's staging buffers are 16 MiB; blocks are copied into one such ring here. */
const STAGING_BYTES = 16 * 1024 * 1024;
const staging = new Uint8Array(STAGING_BYTES);
let used = 0;
const { blockCostUs } = workerData as { blockCostUs: number };

/** Copies the block as the injector does, then stays busy for blockCostUs (placing-thread.ts). */
function copy(bytes: Uint8Array): void {
  const until = performance.now() + blockCostUs / 1000;
  if (used + bytes.length > staging.length) used = 0;
  staging.set(bytes, used);
  used += Math.ceil(bytes.length / 16) * 16;
  while (performance.now() < until);
}

/** Each object's blocks in the order they come, every object at once. */
async function inArrivalOrder(streams: AsyncIterator<KVBlock>[], sink: LayerSink): Promise<void> {
  await Promise.all(
    streams.map(async (stream, i) => {
      for (let got = await stream.next(); ; got = await stream.next()) {
        if (got.done) return sink.ended(i);
        await sink.write(i, got.value);
      }
    }),
  );
}

async function place(request: PlaceRequest): Promise<Placed> {
  const channels = request.streams.map(({ header, port }) => {
    const channel = new BlockChannel(header);
    channel.listen(port);
    return channel;
  });
  const layers = request.streams[0]?.header.layers ?? 0;
  const perLayer = new Array<number>(layers).fill(0);
  let layer0At = Number.NaN;
  let blocks = 0;
  // Layer 0 is ready once every object's copy of it is placed and verified.
  const layer0Ready = (): void => {
    const verified = channels.every((c) => (c.reader.verification?.through ?? layers) >= 1);
    if (Number.isNaN(layer0At) && perLayer[0] === channels.length && verified) layer0At = performance.now();
  };
  for (const c of channels) c.reader.verification?.onAdvance(layer0Ready);
  const sink: LayerSink = {
    write: async (_stream, block) => {
      copy(block.encoded ?? readBlockSource(block.source));
      blocks++;
      perLayer[block.layer]!++;
      layer0Ready();
    },
    ended: () => {},
  };
  const streams = channels.map((c) => c.reader.layers[Symbol.asyncIterator]());
  try {
    if (request.order === 'layer') await writeInLayerOrder(streams, sink, new Promise(() => {}));
    else await inArrivalOrder(streams, sink);
  } finally {
    for (const c of channels) c.close();
  }
  const epoch = (t: number): number => performance.timeOrigin + t;
  return { layer0AtEpoch: epoch(layer0At), placedAtEpoch: epoch(performance.now()), blocks };
}

parentPort!.on('message', (request: PlaceRequest) => {
  place(request).then(
    (placed) => parentPort!.postMessage({ ok: true, placed } satisfies PlacingReply),
    (err: unknown) =>
      parentPort!.postMessage({ ok: false, message: err instanceof Error ? err.message : String(err) } satisfies PlacingReply),
  );
});

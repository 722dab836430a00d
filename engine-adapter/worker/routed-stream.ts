/**
 * A KV object whose verified layer blocks can go straight from the thread that received them to the engine's thread
 * over a MessagePort, so the control plane's event loop never handles the payload (a fetch pool's readers,
 * kdn/query/kv-fetch-pool.ts). The engine proxy (remote-engine.ts) routes such a reader instead of re-posting its
 * blocks; any other reader is forwarded block by block.
 */
import type { MessagePort } from 'node:worker_threads';
import type { KVBlockReader, KVBlockSource, KVObjectReader } from '../../storage/kv-object/types.ts';
import type { WireError } from '../../common/errors.ts';

export interface RoutableReader extends KVObjectReader {
  /**
   * Sends every layer block to `port` as RoutedBlocks messages instead of through `layers`. False (and the port left
   * alone) when that is no longer possible: `layers` was read already, or the object failed or was dropped.
   */
  route(port: MessagePort): boolean;
}

/**
 * A verified layer block as it crosses threads: its bytes (lz4 undone; their buffer is transferred) and, when they
 * were read from a file that never changes, where they lie in it (KVBlockSource).
 */
export interface BlockMessage {
  layer: number;
  bytes: Uint8Array;
  source?: KVBlockSource;
}

/**
 * A block on a routed port: with its bytes, or, read from a same-host file that never changes, as only where they
 * lie (storage KVFileBlock). The engine's thread is in the same process, so it reads them from the file itself, and
 * the fetch thread neither hands it a buffer (its memory, its collections) nor waits for one back.
 */
export type RoutedBlock = BlockMessage | { layer: number; source: KVBlockSource; bytes?: undefined; announced?: true };

/**
 * What arrives on a routed port: verified blocks in layer order, then `end` or `fail`. The engine's side closes the
 * port once its stream is over either way. A same-host object may instead announce its blocks (`announced` file
 * blocks, every layer at once, before any was verified) and then report how many leading layers are verified
 * (`verified`) as its fetch thread checks them; `end` then comes once all are (storage LayerVerification).
 */
export type RoutedBlocks =
  | { type: 'blocks'; blocks: RoutedBlock[] }
  | { type: 'verified'; through: number }
  | { type: 'end' }
  | { type: 'fail'; error: WireError };

/**
 * What the engine's side sends back on a routed port as the session is done with blocks, until it closes the port:
 * the buffers they came in (transferred), once every block in a buffer was written, which the fetch thread receives
 * later objects into. A buffer holding a block not yet written when the stream failed never comes back, since a
 * write still in flight may read it.
 */
export interface ReturnedBuffers {
  type: 'return';
  buffers: ArrayBuffer[];
}

export function isRoutable(reader: KVBlockReader): reader is RoutableReader {
  return typeof (reader as Partial<RoutableReader>).route === 'function';
}

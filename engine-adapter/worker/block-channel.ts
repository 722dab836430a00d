import { KdnError } from '../../common/errors.ts';
import { verifiedBlock } from '../../storage/kv-object/index.ts';
import type { KVHeader, KVLayerBlock, KVObjectReader } from '../../storage/kv-object/types.ts';

/**
 * The worker's end of a KV object streamed from the control plane: blocks are queued as their messages arrive and
 * read by the session as a KVObjectReader, so injection starts with the first layer, not the last.
 */
export class BlockChannel {
  readonly reader: KVObjectReader;
  private readonly blocks: KVLayerBlock[] = [];
  private failure: { error: unknown } | undefined;
  private ended = false;
  private wake: (() => void) | undefined;
  private readonly toBlock: (layer: number, encoded: Uint8Array) => KVLayerBlock;

  constructor(header: KVHeader) {
    this.toBlock = (layer, encoded) => verifiedBlock(header, layer, encoded);
    this.reader = { header, layers: this.layers() };
  }

  push(layer: number, bytes: Uint8Array): void {
    this.blocks.push(this.toBlock(layer, bytes));
    this.signal();
  }

  end(): void {
    this.ended = true;
    this.signal();
  }

  fail(error: KdnError): void {
    this.failure = { error };
    this.end();
  }

  private async *layers(): AsyncGenerator<KVLayerBlock> {
    for (;;) {
      const block = this.blocks.shift();
      if (block) {
        yield block;
        continue;
      }
      if (this.failure) throw this.failure.error;
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private signal(): void {
    this.wake?.();
    this.wake = undefined;
  }
}

/** The KdnError a stream failure message carries. */
export function streamError(error: { code: KdnError['code']; message: string; hint?: string }): KdnError {
  return new KdnError(error.code, error.message, error.hint ? { hint: error.hint } : {});
}

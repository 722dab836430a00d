import type { KVLayerBlock, KVObjectReader } from '../../storage/kv-object/types.ts';

export type PrefetchedReader = KVObjectReader & { drained: Promise<void> };

/**
 * Drains a KV object reader's layers into memory as they arrive, so all of a query's objects download in parallel
 * while the engine injects them one at a time in context order. The returned reader yields the same verified
 * layers, each as soon as it is in; a stream error is raised at the layer where it happened.
 */
export function prefetchLayers(reader: KVObjectReader): PrefetchedReader {
  const blocks: (KVLayerBlock | undefined)[] = [];
  let failure: { error: unknown } | undefined;
  let finished = false;
  let wake: (() => void) | undefined;
  const signal = (): void => {
    wake?.();
    wake = undefined;
  };

  const drained = (async () => {
    try {
      for await (const block of reader.layers) {
        blocks.push(block);
        signal();
      }
    } catch (error) {
      failure = { error };
    } finally {
      finished = true;
      signal();
    }
  })();

  async function* layers(): AsyncGenerator<KVLayerBlock> {
    let next = 0;
    for (;;) {
      if (next < blocks.length) {
        const block = blocks[next]!;
        blocks[next++] = undefined; // injected layers need not stay in memory
        yield block;
        continue;
      }
      if (failure) throw failure.error;
      if (finished) return;
      await new Promise<void>((resolve) => (wake = resolve));
    }
  }

  return { header: reader.header, layers: layers(), drained };
}

import type { KvFetcher } from '../../kdn/query/kv-fetcher.ts';

/**
 * `fetcher` with readers that cannot be routed (engine-adapter/worker/routed-stream.ts): an engine on its own thread
 * gets their blocks through this event loop, the way it did before they went there from the fetch threads, so the
 * two hand-overs can be timed side by side.
 */
export function handOverOnLoop(fetcher: KvFetcher): KvFetcher {
  return {
    threads: fetcher.threads,
    async open(key, expect, signal) {
      const fetched = await fetcher.open(key, expect, signal);
      const { header, layers, drained } = fetched.reader;
      return { ...fetched, reader: { header, layers, drained } };
    },
    useTransformTable: (bytes) => fetcher.useTransformTable(bytes),
    close: () => fetcher.close(),
  };
}

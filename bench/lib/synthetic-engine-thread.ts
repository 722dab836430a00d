/**
 * A synthetic engine (synthetic-engine.ts) on its own thread, as kdn runs its engine (engine-adapter/worker), so a
 * benchmark's figures include the hand-over to that thread: the blocks of a fetch pool's objects go there straight
 * from the fetch threads.
 */
import { createOpenedEngineInWorker, parseModelConfig, type Engine } from '../../engine-adapter/index.ts';
import { parseTransformTable } from '../../storage/kv-object/codecs/transform-table.ts';
import type { HfConfig } from './shapes.ts';
import { asBenchEngine, createSyntheticEngine, idTokenizer, type BenchEngine, type SyntheticOptions } from './synthetic-engine.ts';

interface OpenArgs {
  name: string;
  hfConfig: HfConfig;
  options: SyntheticOptions;
}

/** Runs on the engine's thread (EngineOpener): the synthetic engine, as an Engine. */
export async function openEngine({ name, hfConfig, options }: OpenArgs): Promise<Engine> {
  const bench = await createSyntheticEngine(name, hfConfig, options);
  return {
    info: bench.info,
    backend: bench.backend,
    device: bench.device,
    tokenizer: idTokenizer(parseModelConfig(hfConfig, `synthetic shape ${name}`)),
    createSession: (o = {}) => bench.createSession(o.capacity ?? options.capacity),
    // The proxy sends a table's bytes; the thread verifies them.
    useTransformTable: (table) => bench.useTransformTable(table instanceof Uint8Array ? parseTransformTable(table) : table),
    work: () => bench.work(),
    dispose: () => bench.dispose(),
  };
}

/** createSyntheticEngine, built and run on the engine's own thread. */
export async function createSyntheticEngineInWorker(name: string, hfConfig: HfConfig, options: SyntheticOptions): Promise<BenchEngine> {
  const tokenizer = idTokenizer(parseModelConfig(hfConfig, `synthetic shape ${name}`));
  const args: OpenArgs = { name, hfConfig, options };
  return asBenchEngine(await createOpenedEngineInWorker({ module: import.meta.url, args, capacity: options.capacity }, tokenizer));
}

import { isKdnError } from '../../../common/errors.ts';
import type { Logger } from '../../../common/log.ts';
import type { Engine } from '../../../engine-adapter/types.ts';
import { parseTransformTable, transformTables, type TransformTable } from '../../../storage/kv-object/index.ts';
import { transformTableKey, transformTablePrefix } from '../../../storage/keys.ts';
import type { ObjectStore } from '../../../storage/object-store.ts';
import { fitModelTable } from './fit-model-table.ts';

/**
 * The engine's model's transform table, registered in this process: the one already at the origin (so objects
 * stay decodable and keys stable across restarts and upgrades), or, the first time, one fitted on the shipped
 * calibration text and stored there. Fitting is deterministic, so two servers that fit at once store the same
 * table under the same key. A damaged table at the origin is skipped and logged, never used.
 */
export async function loadOrFitTable(origin: ObjectStore, engine: Engine, log: Logger): Promise<TransformTable> {
  const fingerprint = engine.info.fingerprint;
  const keys: string[] = [];
  for await (const info of origin.list(transformTablePrefix(fingerprint))) keys.push(info.key);
  for (const key of keys.sort()) {
    try {
      const table = parseTransformTable(await origin.get(key));
      if (table.modelFingerprint !== fingerprint || key !== transformTableKey(fingerprint, table.hash)) {
        log.warn({ key }, 'transform table does not belong under its key; skipped');
        continue;
      }
      return transformTables.register(table);
    } catch (err) {
      if (!isKdnError(err)) throw err;
      log.warn({ key, code: err.code, error: err.message }, 'transform table at the origin is unusable; skipped');
    }
  }
  const started = Date.now();
  const table = await fitModelTable(engine);
  const key = transformTableKey(fingerprint, table.hash);
  await origin.put(key, table.bytes, { contentLength: table.bytes.length });
  log.info({ key, bytes: table.bytes.length, ms: Date.now() - started }, 'fitted and stored a transform table');
  return transformTables.register(table);
}

import type { Logger } from '../common/log.ts';
import type { EdgeClient } from '../edge/client/client.ts';
import type { ObjectStore } from '../storage/object-store.ts';

export interface PurgeResult {
  /** Objects deleted at the origin. */
  deleted: number;
  /** Of those, the ones the edges confirmed gone too. */
  purgedAtEdges: number;
}

/**
 * Deletes objects no document uses any more (a deleted document's, or what an ingest that will not publish wrote): from the edges first, so no edge goes on serving an object the origin
 * no longer has, then from the origin. No edge answering is logged and does not stop the delete (the document is
 * already unpublished); an origin failure is thrown, since the object would otherwise be left behind unnoticed.
 */
export async function purgeObjects(
  keys: readonly string[],
  stores: { edges: EdgeClient; origin: ObjectStore; log: Logger },
): Promise<PurgeResult> {
  let purgedAtEdges = 0;
  for (const key of keys) {
    try {
      await stores.edges.delete(key);
      purgedAtEdges++;
    } catch (err) {
      stores.log.warn({ key, err }, 'could not purge an object at the edges');
    }
    await stores.origin.delete(key);
  }
  return { deleted: keys.length, purgedAtEdges };
}

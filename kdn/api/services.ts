import type { Logger } from '../../common/log.ts';
import type { EdgeClient } from '../../edge/client/client.ts';
import type { Engine } from '../../engine-adapter/types.ts';
import type { CodecSpec } from '../../storage/kv-object/types.ts';
import type { ObjectStore } from '../../storage/object-store.ts';
import type { Access } from '../auth/access.ts';
import type { Catalog } from '../catalog.ts';
import type { KdnConfig } from '../config.ts';
import type { IngestJobs } from '../ingest/jobs.ts';
import type { QueryService } from '../query/query-service.ts';
import type { EngineScheduler } from '../scheduler/engine-scheduler.ts';
import type { KdnMetrics } from './metrics.ts';

/** Everything the routes use, built once by kdn/server.ts. */
export interface KdnServices {
  config: KdnConfig;
  engine: Engine;
  origin: ObjectStore;
  edges: EdgeClient;
  catalog: Catalog;
  scheduler: EngineScheduler;
  jobs: IngestJobs;
  queries: QueryService;
  metrics: KdnMetrics;
  codec: CodecSpec;
  log: Logger;
  /** API keys, rate limits, tenancy of namespaces and chunk-key salts. */
  access: Access;
  /** The secret edge requests are signed with (undefined: the edges run without auth). */
  edgeSecret: string | undefined;
}

import type { Logger } from '../../common/log.ts';
import type { Access } from '../auth/access.ts';
import type { AnswerService } from '../services/answer-service.ts';
import type { DocumentService } from '../services/document-service.ts';
import type { JobService } from '../services/job-service.ts';
import type { OperationsService } from '../services/operations-service.ts';
import type { KdnMetrics } from './metrics.ts';

/**
 * What the API is built from, by role, wired once by kdn/server.ts: each route module gets only the services it uses
 * (app.ts), and the app itself only what every request goes through (access log, metrics, authentication).
 */
export interface ApiServices {
  documents: DocumentService;
  queries: AnswerService;
  jobs: JobService;
  operations: OperationsService;
  /** API keys and request rates, for authentication. */
  access: Pick<Access, 'keys' | 'limiter' | 'failedAuth' | 'metricsPublic'>;
  metrics: KdnMetrics;
  log: Logger;
}

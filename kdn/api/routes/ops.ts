import express, { type Request, type Response } from 'express';
import { principalOf, requireOperator } from '../../auth/authenticate.ts';
import type { OperationsService } from '../../services/operations-service.ts';
import type { RouteHandlers } from '../mount-routes.ts';
import { WarmPlanSchema } from '../schemas.ts';
import { validate } from '../validate.ts';

/**
 * Operations: liveness and readiness (no key), metrics and status (operator keys: they describe the whole server),
 * the caller's own usage, and warm plans, which tell the warmer (`kdn warm`) the edges and the chunk objects of a
 * namespace or of some documents; the warmer then drives the edges' /warm itself, with the edge token the plan carries.
 */
export function opsHandlers(operations: OperationsService): RouteHandlers<'ops'> {
  return {
    health: (_req: Request, res: Response) => {
      res.json({ status: 'ok' });
    },

    ready: async (_req: Request, res: Response) => {
      res.json(await operations.ready());
    },

    metrics: async (_req: Request, res: Response) => {
      if (!operations.metricsPublic) requireOperator(res);
      const { contentType, text } = await operations.metrics();
      res.type(contentType).send(text);
    },

    status: (_req: Request, res: Response) => {
      requireOperator(res);
      res.json(operations.status());
    },

    usage: (_req: Request, res: Response) => {
      res.json(operations.usage(principalOf(res).tenant));
    },

    warmPlan: [
      express.json({ limit: '256kb' }),
      async (req: Request, res: Response) => {
        const body = validate(WarmPlanSchema, req.body, 'warm plan request');
        res.json(await operations.warmPlan(principalOf(res).tenant, body));
      },
    ],
  };
}

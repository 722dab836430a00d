import express, { type Express, type Request, type RequestHandler, type Response } from 'express';
import { KdnError } from '../../common/errors.ts';
import { allowedMethods, ROUTES, routePaths, type HandlerName, type RouteModule } from './route-table.ts';

/** A route module's handlers: exactly the ones route-table.ts names for it, each with the middleware it needs first. */
export type RouteHandlers<M extends RouteModule> = Record<HandlerName<M>, RequestHandler | RequestHandler[]>;
export type AllRouteHandlers = { [M in RouteModule]: RouteHandlers<M> };

/**
 * Mounts every route of the table on `app`, then answers what no route took: a known path asked with another method
 * is METHOD_NOT_ALLOWED (405, with the path's methods in `Allow`), any other path NOT_FOUND listing the paths.
 */
export function mountRoutes(app: Express, handlers: AllRouteHandlers): void {
  const router = express.Router();
  for (const route of ROUTES) {
    const handler = (handlers[route.module] as Record<string, RequestHandler | RequestHandler[]>)[route.handler]!;
    const method = route.method.toLowerCase() as 'get' | 'post' | 'delete';
    router[method](route.path, handler);
  }
  app.use(router);
  app.use(unrouted);
}

function unrouted(req: Request, res: Response): never {
  const allow = allowedMethods(req.path);
  if (allow.length > 0) {
    res.setHeader('allow', allow.join(', '));
    throw new KdnError('METHOD_NOT_ALLOWED', `${req.method} is not a method of ${req.path}`, {
      hint: `${req.path} answers ${allow.join(', ')}`,
    });
  }
  throw new KdnError('NOT_FOUND', `no route ${req.method} ${req.path}`, { hint: `routes: ${routePaths().join(', ')}` });
}

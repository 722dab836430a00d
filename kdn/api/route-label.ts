import type { Express, Request } from 'express';

/** The parts of express's router layers read here (express 5 / router 2). */
interface Layer {
  route?: { path: string; methods: Record<string, boolean> };
  handle?: { stack?: Layer[] };
  match(path: string): unknown;
}

/**
 * The route pattern a request was meant for, for metric labels, when it was answered before reaching its route (a
 * 401 or 429 from authentication): found by matching the path against every route of the app's routers. Patterns
 * keep ids out of the labels; a path no route knows is 'unmatched'.
 */
export function routeLabel(app: Express, req: Request): string {
  const matched = (req.route as { path?: string } | undefined)?.path;
  if (matched) return matched;
  const method = req.method.toLowerCase();
  const walk = (stack: Layer[] | undefined): string | undefined => {
    for (const layer of stack ?? []) {
      if (layer.route) {
        if ((layer.route.methods[method] || (method === 'head' && layer.route.methods.get)) && matches(layer, req.path)) return layer.route.path;
      } else if (layer.handle?.stack) {
        const found = walk(layer.handle.stack);
        if (found) return found;
      }
    }
    return undefined;
  };
  return walk((app as unknown as { router?: { stack?: Layer[] } }).router?.stack) ?? 'unmatched';
}

/** Layer.match decodes the parameters of a path its pattern matched, and throws on bad percent-encoding ("%ff"). */
function matches(layer: Layer, path: string): boolean {
  try {
    return Boolean(layer.match(path));
  } catch {
    return true;
  }
}

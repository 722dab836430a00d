import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { EDGE_PATHS, edgeRouteOf, type EdgeRoute, type EdgeStats } from '../protocol.ts';

/**
 * A Prometheus registry per edge instance (several edges can live in one process). Metrics read the edge's plain
 * counters at scrape time, so the request path pays nothing for them.
 */
export function createEdgeMetrics(snapshot: () => EdgeStats): Registry {
  const registry = new Registry();

  const counter = (name: string, help: string, labelNames: string[], read: (s: EdgeStats) => [Record<string, string>, number][]): void => {
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        for (const [labels, value] of read(snapshot())) this.inc(labels, value);
      },
    });
  };
  const gauge = (name: string, help: string, labelNames: string[], read: (s: EdgeStats) => [Record<string, string>, number][]): void => {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        for (const [labels, value] of read(snapshot())) this.set(labels, value);
      },
    });
  };

  gauge('kdn_edge_uptime_seconds', 'Seconds since the edge started', [], (s) => [[{}, s.uptimeSeconds]]);
  counter('kdn_edge_cache_hits_total', 'Lookups answered by a tier', ['tier'], (s) => [
    [{ tier: 'memory' }, s.memory.hits],
    [{ tier: 'disk' }, s.disk.hits],
  ]);
  counter('kdn_edge_cache_misses_total', 'Lookups a tier could not answer', ['tier'], (s) => [
    [{ tier: 'memory' }, s.memory.misses],
    [{ tier: 'disk' }, s.disk.misses],
  ]);
  counter('kdn_edge_evictions_total', 'Objects evicted to stay within a byte budget', ['tier'], (s) => [
    [{ tier: 'memory' }, s.memory.evictions],
    [{ tier: 'disk' }, s.disk.evictions],
  ]);
  counter('kdn_edge_disk_corrupt_total', 'Disk files that failed verification and were dropped', [], (s) => [[{}, s.disk.corruptDropped]]);
  counter('kdn_edge_origin_requests_total', 'Origin fetches by result', ['result'], (s) => [
    [{ result: 'found' }, s.origin.found],
    [{ result: 'not_found' }, s.origin.notFound],
    [{ result: 'corrupt' }, s.origin.corrupt],
    [{ result: 'error' }, s.origin.errors],
    [{ result: 'timeout' }, s.origin.timeouts],
  ]);
  counter('kdn_edge_origin_bytes_total', 'Verified bytes fetched from the origin', [], (s) => [[{}, s.origin.bytes]]);
  counter('kdn_edge_negative_hits_total', 'Misses answered from the negative cache', [], (s) => [[{}, s.origin.negativeHits]]);
  counter('kdn_edge_collapsed_requests_total', 'Requests that joined a lookup already in flight', [], (s) => [[{}, s.origin.collapsed]]);
  counter('kdn_edge_requests_total', 'HTTP requests received', [], (s) => [[{}, s.served.requests]]);
  counter('kdn_edge_served_bytes_total', 'Object bytes sent in GET responses', [], (s) => [[{}, s.served.bytesServed]]);
  counter('kdn_edge_errors_total', 'Requests answered with an error', [], (s) => [[{}, s.served.errors]]);
  counter('kdn_edge_unauthorized_total', 'Requests refused for a missing, expired or wrong token', [], (s) => [
    [{}, s.served.unauthorized],
  ]);
  gauge('kdn_edge_tier_objects', 'Objects held by a tier', ['tier'], (s) => [
    [{ tier: 'memory' }, s.memory.objects],
    [{ tier: 'disk' }, s.disk.objects],
  ]);
  gauge('kdn_edge_tier_bytes', 'Bytes held by a tier', ['tier'], (s) => [
    [{ tier: 'memory' }, s.memory.bytes],
    [{ tier: 'disk' }, s.disk.bytes],
  ]);
  gauge('kdn_edge_memory_heap_bytes', "Memory-tier bytes held in the edge's own memory (the rest only in shared-memory files)", [], (s) => [
    [{}, s.memory.heapBytes],
  ]);
  gauge('kdn_edge_tier_budget_bytes', 'Byte budget of a tier', ['tier'], (s) => [
    [{ tier: 'memory' }, s.memory.budgetBytes],
    [{ tier: 'disk' }, s.disk.budgetBytes],
  ]);
  return registry;
}

const METHODS = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'POST']);

/**
 * Registers the edge's request latency histogram on `registry` and returns what times one request, from its arrival
 * to the last byte handed to the socket, labelled by route (/kv for every object), method and status. Labels come
 * from fixed sets, so no client can grow them.
 */
export function edgeRequestTimer(registry: Registry): (req: IncomingMessage, res: ServerResponse) => void {
  const latency = new Histogram({
    name: 'kdn_edge_request_duration_seconds',
    help: 'Edge HTTP request latency by route, method and status',
    labelNames: ['route', 'method', 'status'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  return (req, res) => {
    const start = performance.now();
    res.once('finish', () => {
      const url = req.url ?? '/';
      const path = url.split('?', 1)[0]!;
      const route = routeLabel(edgeRouteOf(path));
      const method = METHODS.has(req.method ?? '') ? req.method! : 'other';
      latency.observe({ route, method, status: String(res.statusCode) }, (performance.now() - start) / 1000);
    });
  };
}

function routeLabel(route: EdgeRoute | undefined): string {
  if (route === undefined) return 'other';
  return route === 'kv' ? EDGE_PATHS.kvPrefix.slice(0, -1) : EDGE_PATHS[route];
}

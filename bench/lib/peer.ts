/** Runs bench/peer_prefill.py (transformers on the same shape) and reads its JSON report. */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import type { HfConfig } from './shapes.ts';

const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), '..', 'peer_prefill.py');

const resultSchema = z.object({
  tokens: z.number().int(),
  prefill_ms: z.number().optional(),
  decode_tok_s: z.number().optional(),
  /** With hostHitQuestion: the context's KV copied from pinned host memory, then the question prefilled over it. */
  host_hit_ms: z.number().optional(),
  host_hit_copy_ms: z.number().optional(),
  host_hit_bytes: z.number().optional(),
  host_hit_error: z.string().optional(),
  error: z.string().optional(),
});

const reportSchema = z.union([
  z.object({ available: z.literal(false), reason: z.string() }),
  z.object({
    available: z.literal(true),
    device: z.string(),
    torch: z.string(),
    transformers: z.string(),
    results: z.array(resultSchema),
  }),
]);

/** Measured runs per length (after 2 warm-ups), as in the peer table of docs/ANCHORS.md. */
export const PEER_REPS = 3;

export type PeerResult = z.infer<typeof resultSchema>;

/** The peer's figures by prefill length, or why there are none. */
export type PeerReport =
  | { available: false; reason: string }
  | { available: true; device: string; label: string; decodeTokens: number; byTokens: Map<number, PeerResult> };

export interface PeerOptions {
  hfConfig: HfConfig;
  tokens: number[];
  decode?: number;
  warmup?: number;
  reps?: number;
  /** Also time a local host-memory hit: the last this-many tokens prefilled over the rest's KV copied in from pinned memory. */
  hostHitQuestion?: number;
  /** The child is killed past this; lengths not done by then are reported missing. */
  timeoutMs: number;
  /** Milliseconds the GPU idles before each measured prefill and host hit (bench/ttft.ts TtftArgs.idleMs). */
  idleMs?: number;
}

export async function runPeer(options: PeerOptions): Promise<PeerReport> {
  const args = [
    SCRIPT,
    '--config-json',
    JSON.stringify(options.hfConfig),
    '--tokens',
    options.tokens.join(','),
    '--decode',
    String(options.decode ?? 0),
    '--warmup',
    String(options.warmup ?? 2),
    '--reps',
    String(options.reps ?? PEER_REPS),
    '--host-hit',
    String(options.hostHitQuestion ?? 0),
    '--idle-ms',
    String(options.idleMs ?? 0),
    // The script stops starting lengths a little before we would kill it, so it still reports what it has.
    '--max-seconds',
    String(Math.max(1, (options.timeoutMs / 1000) * 0.8)),
  ];
  const { code, stdout, stderr, error } = await new Promise<{ code: number | null; stdout: string; stderr: string; error?: Error }>(
    (done) => {
      const child = spawn('python3', args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
      child.stderr.setEncoding('utf8').on('data', (s: string) => (err = (err + s).slice(-4000)));
      const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
      child.once('error', (e) => {
        clearTimeout(timer);
        done({ code: null, stdout: out, stderr: err, error: e });
      });
      child.once('close', (c) => {
        clearTimeout(timer);
        done({ code: c, stdout: out, stderr: err });
      });
    },
  );
  if (error) return { available: false, reason: `cannot run python3: ${error.message}` };
  const last = stdout.trim().split('\n').pop() ?? '';
  let parsed: z.infer<typeof reportSchema>;
  try {
    parsed = reportSchema.parse(JSON.parse(last));
  } catch {
    const tail = stderr.trim().split('\n').slice(-3).join(' | ');
    return { available: false, reason: `peer_prefill.py exited ${code ?? 'killed (timeout)'} without a report: ${tail}` };
  }
  if (!parsed.available) return parsed;
  return {
    available: true,
    device: parsed.device,
    label: `transformers ${parsed.transformers}, torch ${parsed.torch}, bf16, sdpa`,
    decodeTokens: options.decode ?? 0,
    byTokens: new Map(parsed.results.map((r) => [r.tokens, r])),
  };
}

import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface Started {
  child: ChildProcess;
  /** The JSON ready line the process printed. */
  ready: Record<string, unknown> & { url: string };
  /** Everything the process wrote on stderr so far (for failure messages). */
  stderr(): string;
  /** SIGKILL (default) or SIGTERM, then waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

const KDN = ['bin/kdn.js'];

/** The API key (tenant "test", role operator) and edge secret every kdn and edge process started by these helpers uses. */
export const TEST_API_KEY = 'test-key-0123456789abcdef';
export const TEST_EDGE_SECRET = 'test-edge-secret-0123456789abcdef';
const AUTH_ENV = { KDN_API_KEYS: `${TEST_API_KEY}=test:operator`, KDN_EDGE_SECRET: TEST_EDGE_SECRET, KDN_API_KEY: TEST_API_KEY };

/** Starts a long-running command that prints one JSON ready line on stdout (kdn serve/edge --json, s3rver-process). */
export async function startProcess(args: string[], options: { env?: NodeJS.ProcessEnv; node?: string[]; timeoutMs?: number } = {}): Promise<Started> {
  const child = spawn(process.execPath, [...(options.node ?? []), ...args], {
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    err = (err + chunk.toString('utf8')).slice(-20_000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const lines = createInterface({ input: child.stdout! });
  const ready = await new Promise<Started['ready']>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args.join(' ')} not ready after ${options.timeoutMs ?? 30_000} ms:\n${err}`)), options.timeoutMs ?? 30_000);
    lines.once('line', (line) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(line) as Started['ready']);
      } catch {
        reject(new Error(`not a ready line: ${line}\n${err}`));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${args.join(' ')} exited with ${code} before it was ready:\n${err}`));
    });
  });
  if (!ready.url && typeof ready.endpoint === 'string') ready.url = ready.endpoint;
  return {
    child,
    ready,
    stderr: () => err,
    stop: async (signal: NodeJS.Signals = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

export function startKdnProcess(args: string[], env?: NodeJS.ProcessEnv): Promise<Started> {
  return startProcess([...KDN, ...args, '--json'], { env: { LOG_LEVEL: 'warn', ...AUTH_ENV, ...env } });
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs one `kdn` CLI command to completion (with TEST_API_KEY unless `env` sets KDN_API_KEY). */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...KDN, ...args], { env: { ...process.env, ...AUTH_ENV, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs a CLI command that must succeed and print JSON. */
export async function cliJson<T>(args: string[], env: NodeJS.ProcessEnv = {}): Promise<T> {
  const result = await runCli([...args, '--json'], env);
  if (result.code !== 0) throw new Error(`kdn ${args.join(' ')} exited ${result.code}:\n${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}

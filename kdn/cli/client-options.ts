import { Option, type Command } from 'commander';
import { readSecretFile } from '../../common/secret-file.ts';
import { KDN_ENV } from '../config.ts';
import { localKeyPath, readLocalKey } from '../auth/local-key.ts';
import { DEFAULT_SERVER, KdnApiClient } from '../client/api-client.ts';
import { UsageError } from './exit-codes.ts';

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/**
 * Adds --server (env KDN_SERVER), --api-key (env KDN_API_KEY), --api-key-file (env KDN_API_KEY_FILE) and --data-dir (env
 * KDN_DATA_DIR) to a client command.
 */
export function withServer(command: Command): Command {
  return command
    .addOption(new Option('--server <url>', 'kdn server URL').env('KDN_SERVER').default(DEFAULT_SERVER))
    .addOption(
      new Option('--api-key <key>', 'API key (default for a local server: the key `kdn serve` wrote to <data-dir>/api-key)').env(
        'KDN_API_KEY',
      ),
    )
    .addOption(
      new Option('--api-key-file <file>', 'file (mode 0600) holding the API key: unlike a flag, not visible to other local users').env(
        'KDN_API_KEY_FILE',
      ),
    )
    .addOption(
      new Option(
        '--data-dir <dir>',
        'data directory of a `kdn serve` on this machine, to read its generated key from (default ./data)',
      ).env(KDN_ENV.dataDir),
    );
}

export function clientFor(flags: { server: string; apiKey?: string; apiKeyFile?: string; dataDir?: string }): KdnApiClient {
  try {
    const fromFile = flags.apiKeyFile ? readSecretFile(flags.apiKeyFile, 'API key') : undefined;
    return new KdnApiClient(flags.server, flags.apiKey || fromFile || localServerKey(flags.server, flags.dataDir ?? './data'));
  } catch (err) {
    const e = err as { message?: string; hint?: string };
    throw new UsageError(e.message ?? String(err), e.hint);
  }
}

/**
 * The key a `kdn serve` on this machine generated, when the server is on loopback: it is in the data directory that
 * serve uses (--data-dir or KDN_DATA_DIR, as for serve; default ./data).
 */
function localServerKey(server: string, dataDir: string): string | undefined {
  let host: string;
  try {
    host = new URL(server).hostname;
  } catch {
    return undefined;
  }
  return LOOPBACK.has(host) ? readLocalKey(localKeyPath(dataDir)) : undefined;
}

/** Repeatable options (--doc a --doc b) collect into an array. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

import { Option, type Command } from 'commander';
import { DEFAULT_SERVER, KdnApiClient } from '../client/api-client.ts';

/** Adds --server (env KDN_SERVER) to a client command. */
export function withServer(command: Command): Command {
  return command.addOption(new Option('--server <url>', 'kdn server URL').env('KDN_SERVER').default(DEFAULT_SERVER));
}

export function clientFor(flags: { server: string }): KdnApiClient {
  return new KdnApiClient(flags.server);
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

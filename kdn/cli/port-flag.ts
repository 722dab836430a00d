import { InvalidArgumentError } from 'commander';

/** --port of serve and edge, checked as commander parses it, so a bad one is a usage error (status 2). */
export function portFlag(value: string): string {
  if (!/^\d+$/.test(value) || Number(value) > 65535) {
    throw new InvalidArgumentError('a port is a whole number from 0 to 65535 (0 for any free one).');
  }
  return value;
}

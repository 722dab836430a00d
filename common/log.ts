import { pino, type Logger } from 'pino';

/** Structured JSON logs on stderr; LOG_LEVEL sets the level (default info, silent under tests unless set). */
export function createLogger(name: string): Logger {
  const level = process.env.LOG_LEVEL ?? (process.env.KDN_TEST ? 'silent' : 'info');
  return pino({ name, level }, pino.destination(2));
}

export type { Logger };

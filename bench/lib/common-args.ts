/** The arguments ttft.ts and engine.ts share: which model, where, how long. */
import type { parseArgs } from 'node:util';
import type { BackendName } from '../../engine-adapter/index.ts';
import { choice, intList, positiveInt, positiveSeconds } from './args.ts';
import { Deadline } from './deadline.ts';
import { SHAPE_NAMES } from './shapes.ts';

export interface SpeedArgs {
  shape: string;
  model: string | undefined;
  backend: 'auto' | BackendName;
  contexts: number[];
  runs: number;
  warmup: number;
  deadline: Deadline;
}

export const SPEED_OPTIONS = {
  shape: { type: 'string' },
  model: { type: 'string' },
  backend: { type: 'string' },
  contexts: { type: 'string' },
  runs: { type: 'string' },
  warmup: { type: 'string' },
  'max-seconds': { type: 'string' },
} as const;

type ParsedValues = ReturnType<typeof parseArgs<{ options: typeof SPEED_OPTIONS }>>['values'];

export function speedArgs(values: ParsedValues, defaults: { contexts: number[] }): SpeedArgs {
  return {
    shape: choice(values.shape, 'shipped', SHAPE_NAMES, 'shape'),
    model: values.model,
    backend: choice(values.backend, 'auto', ['auto', 'webgpu', 'cpu'] as const, 'backend'),
    contexts: intList(values.contexts, defaults.contexts, 'contexts'),
    runs: positiveInt(values.runs, 3, 'runs'),
    warmup: values.warmup === '0' ? 0 : positiveInt(values.warmup, 1, 'warmup'),
    deadline: new Deadline(positiveSeconds(values['max-seconds'], Infinity, 'max-seconds')),
  };
}

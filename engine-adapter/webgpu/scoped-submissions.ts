import { withErrorScopes } from './device.ts';
import type { GpuContext, Recorder } from './gpu-context.ts';

/**
 * The submissions of one forward that is recorded a piece at a time (a layer whose context is still arriving, a
 * blended forward's phases), each in its own error scope. The scopes are awaited together at the end, so the GPU
 * never waits on the host between pieces.
 */
export class ScopedSubmissions {
  private readonly checks: Promise<void>[] = [];

  constructor(private readonly ctx: GpuContext) {}

  /** Records and submits one piece; resolves with its readbacks once the GPU ran it. */
  launch(record: (rec: Recorder) => void): Promise<ArrayBuffer[]> {
    let done: Promise<ArrayBuffer[]> = Promise.resolve([]);
    const check = withErrorScopes(this.ctx.device, 'forward', () => {
      const rec = this.ctx.recorder();
      record(rec);
      done = rec.submit();
    });
    check.catch(() => undefined);
    this.checks.push(check);
    return done;
  }

  /** Throws the first device error of any piece launched so far. */
  async settle(): Promise<void> {
    await Promise.all(this.checks);
  }
}

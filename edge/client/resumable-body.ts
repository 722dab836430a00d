import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { finished } from 'node:stream';
import { EdgeFailure } from './client-http.ts';

/** What a resumable body needs from the client: the next response for the bytes from `received` on, or a failure. */
export interface BodyResumer {
  /** Where the current response comes from, for failures. */
  edge: string;
  /** Expected total size (the first response's Content-Length). */
  size: number;
  /** Called when a response failed mid-body: records `failure` and returns the response continuing at `received`; throws when none can. */
  resume(failure: EdgeFailure, received: number): Promise<{ res: IncomingMessage; edge: string }>;
  /** The caller's signal: once it fired, errors pass through as they are instead of failing over. */
  signal?: AbortSignal;
}

/**
 * The body of a GET as one Readable across edges: bytes flow from the current response with backpressure
 * (paused while the consumer's buffer is full) and no per-chunk promise; when the response errors or ends short,
 * the rest comes from `resumer.resume`, and the consumer never sees the seam.
 */
export class ResumableBody extends Readable {
  private res: IncomingMessage | undefined;
  private edge: string;
  private receivedBytes = 0;
  private readonly resumer: BodyResumer;

  constructor(first: IncomingMessage, resumer: BodyResumer) {
    super();
    this.resumer = resumer;
    this.edge = resumer.edge;
    this.follow(first);
  }

  /** Bytes delivered to the stream so far. */
  get received(): number {
    return this.receivedBytes;
  }

  override _read(): void {
    this.res?.resume();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.res?.destroy();
    this.res = undefined;
    callback(err);
  }

  private follow(res: IncomingMessage): void {
    this.res = res;
    res.on('data', (chunk: Buffer) => {
      this.receivedBytes += chunk.length;
      if (!this.push(chunk)) res.pause();
    });
    finished(res, (err) => {
      if (this.res !== res || this.destroyed) return;
      this.res = undefined;
      if (!err && this.receivedBytes === this.resumer.size) {
        this.push(null);
        return;
      }
      if (err && this.resumer.signal?.aborted) {
        this.destroy(err);
        return;
      }
      const failure =
        err instanceof EdgeFailure
          ? err
          : new EdgeFailure(
              this.edge,
              'EDGE_UNAVAILABLE',
              err ? err.message : `response ended at ${this.receivedBytes} of ${this.resumer.size} bytes`,
              true,
            );
      this.resumer.resume(failure, this.receivedBytes).then(
        (next) => {
          if (this.destroyed) {
            next.res.destroy();
            return;
          }
          this.edge = next.edge;
          this.follow(next.res);
        },
        (resumeErr: unknown) => this.destroy(resumeErr as Error),
      );
    });
  }
}

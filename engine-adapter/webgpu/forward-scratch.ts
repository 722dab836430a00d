/**
 * Activation buffers of one forward chunk, shared by every session of a backend (the queue runs submissions in
 * order, so one chunk's kernels finish before the next chunk's overwrite them). They grow to the largest chunk seen.
 */
import type { ModelConfig } from '../model/config.ts';
import type { GpuContext } from './gpu-context.ts';

export class ForwardScratch {
  ids!: GPUBuffer;
  /** Residual stream [tokens][hidden]. */
  x!: GPUBuffer;
  /** The projections' normed input [tokens][hidden]. */
  h!: GPUBuffer;
  q!: GPUBuffer;
  k!: GPUBuffer;
  v!: GPUBuffer;
  /** Qwen3 q/k norm outputs. */
  qNormed!: GPUBuffer;
  kNormed!: GPUBuffer;
  attn!: GPUBuffer;
  /** The gate projection, then SwiGLU's output (the up projection is applied as it finishes). */
  gate!: GPUBuffer;
  /** The last token's hidden state, for 'last' logits. */
  last!: GPUBuffer;
  logits!: GPUBuffer;
  private tokens = 0;
  private logitRows = 0;

  constructor(
    private readonly ctx: GpuContext,
    private readonly config: ModelConfig,
  ) {}

  ensure(tokens: number, logitRows: number): void {
    const c = this.config;
    if (tokens > this.tokens) {
      this.destroyActivations();
      const f = (floats: number, label: string): GPUBuffer => this.ctx.storage(tokens * floats * 4, label);
      const qDim = c.heads * c.headDim;
      const kvDim = c.kvHeads * c.headDim;
      this.ids = this.ctx.storage(tokens * 4, 'ids');
      this.x = f(c.hiddenSize, 'x');
      this.h = f(c.hiddenSize, 'h');
      this.q = f(qDim, 'q');
      this.k = f(kvDim, 'k');
      this.v = f(kvDim, 'v');
      this.qNormed = c.qkNorm ? f(qDim, 'q normed') : this.ctx.dummy;
      this.kNormed = c.qkNorm ? f(kvDim, 'k normed') : this.ctx.dummy;
      this.attn = f(qDim, 'attn');
      this.gate = f(c.intermediateSize, 'gate');
      this.last = this.ctx.storage(c.hiddenSize * 4, 'last');
      this.tokens = tokens;
    }
    if (logitRows > this.logitRows) {
      this.logits?.destroy();
      this.logits = this.ctx.storage(logitRows * c.vocabSize * 4, 'logits');
      this.logitRows = logitRows;
    }
  }

  private destroyActivations(): void {
    if (this.tokens === 0) return;
    for (const b of [this.ids, this.x, this.h, this.q, this.k, this.v, this.attn, this.gate, this.last]) b.destroy();
    if (this.config.qkNorm) {
      this.qNormed.destroy();
      this.kNormed.destroy();
    }
  }

  destroy(): void {
    this.destroyActivations();
    this.logits?.destroy();
    this.tokens = 0;
    this.logitRows = 0;
  }
}

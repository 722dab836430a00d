import type { Tokenizer } from '../types.ts';

/**
 * Turns generated token ids into text increments for streaming. A token can end in the middle of a UTF-8
 * character (byte-level BPE), which decodes to U+FFFD; such text is held back until a later token completes it.
 * Only the ids since the last emitted boundary are re-decoded (with one token of left context, so tokenizers
 * that treat a leading token specially decode the same as in the full text), keeping the cost linear.
 */
export class TextStream {
  private readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;
  private emitted = '';

  constructor(private readonly tokenizer: Tokenizer) {}

  /** Adds a token; returns the text it completes ('' while a character is still partial). */
  push(id: number): string {
    this.ids.push(id);
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const full = this.tokenizer.decode(this.ids.slice(this.prefixOffset));
    if (full.length <= prefix.length || full.endsWith('\uFFFD')) return '';
    const text = full.slice(prefix.length);
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    this.emitted += text;
    return text;
  }

  /** Text of tokens still held back (an unfinished character at the end of generation), decoded as it is. */
  flush(): string {
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const text = this.tokenizer.decode(this.ids.slice(this.prefixOffset)).slice(prefix.length);
    this.prefixOffset = this.readOffset = this.ids.length;
    this.emitted += text;
    return text;
  }

  /** Everything emitted so far. */
  get text(): string {
    return this.emitted;
  }
}

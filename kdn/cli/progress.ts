/**
 * Progress for long CLI operations on stderr: a bar redrawn in place on a terminal, plain lines otherwise (at
 * most one per tenth of the work, so logs stay short).
 */
export class Progress {
  /** A bar drawn on the terminal and not yet ended by a newline, which a message written next would share. */
  private static open: Progress | undefined;
  private readonly tty: boolean;
  private lastDecile = -1;

  constructor(
    private readonly label: string,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = stream.isTTY === true;
  }

  update(done: number, total: number, detail = ''): void {
    const fraction = total > 0 ? Math.min(1, done / total) : 1;
    if (this.tty) {
      const width = 30;
      const filled = Math.round(fraction * width);
      Progress.open = this;
      this.stream.write(`\r${this.label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${done}/${total} ${detail}\x1b[K`);
      return;
    }
    const decile = Math.floor(fraction * 10);
    if (decile === this.lastDecile) return;
    this.lastDecile = decile;
    this.stream.write(`${this.label}: ${done}/${total}${detail ? ` ${detail}` : ''}\n`);
  }

  /** A message that must show (a failure), without breaking the bar. */
  note(message: string): void {
    this.stream.write(this.tty ? `\r\x1b[K${message}\n` : `${message}\n`);
  }

  finish(): void {
    if (this.tty) this.stream.write('\n');
    if (Progress.open === this) Progress.open = undefined;
  }

  /** Ends a bar left open (a command failed mid-way), so the error that follows starts on its own line. */
  static endLine(): void {
    Progress.open?.finish();
  }
}

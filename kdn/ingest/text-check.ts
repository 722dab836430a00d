import { KdnError } from '../../common/errors.ts';

/** Characters looked at: enough to tell text from a binary without scanning a whole large upload. */
const SAMPLE = 64 * 1024;
/** Share of the sample that may be control characters or U+FFFD (undecodable bytes) in a text. */
const MAX_ODD_SHARE = 0.01;
const ODD = /[\u0000-\u0008\u000e-\u001f\u007f\ufffd]/g;

/**
 * Refuses content that is not text (415): an executable or an image turned into a "text" of replacement characters
 * and control bytes becomes thousands of chunks of KV that retrieve nothing, at the cost of every other tenant's
 * engine time.
 */
export function checkIsText(text: string, name: string): void {
  const sample = text.length > SAMPLE ? text.slice(0, SAMPLE) : text;
  const odd = sample.match(ODD)?.length ?? 0;
  if (sample.includes('\u0000') || odd > sample.length * MAX_ODD_SHARE) {
    throw new KdnError(
      'UNSUPPORTED_MEDIA_TYPE',
      `${name} looks like binary content, not text (${odd} control or undecodable characters in the first ${sample.length})`,
      {
        hint: 'upload plain text or Markdown; convert PDFs, office files and the like to text first',
      },
    );
  }
}

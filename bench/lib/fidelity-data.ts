/** The fidelity benchmark's document set: held-out documents and the continuation prompts written about them. */
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { z } from 'zod';
import { KdnError } from '../../common/errors.ts';
import type { Tokenizer } from '../../engine-adapter/types.ts';

const questionsSchema = z.object({
  documents: z.array(z.object({ file: z.string().min(1), prompts: z.array(z.string().min(1)).min(1) })).min(1),
});

export interface FidelityDocument {
  file: string;
  text: string;
  prompts: string[];
}

/** Reads `questionsPath` and the documents it names from `heldoutDir`, keeping the first `maxDocs` and `maxPrompts` each. */
export async function loadDocuments(
  questionsPath: string,
  heldoutDir: string,
  maxDocs: number,
  maxPrompts: number,
): Promise<FidelityDocument[]> {
  let parsed: z.infer<typeof questionsSchema>;
  try {
    parsed = questionsSchema.parse(JSON.parse(await readFile(questionsPath, 'utf8')));
  } catch (err) {
    throw new KdnError('INVALID_ARGUMENT', `cannot use ${questionsPath}: ${(err as Error).message}`, {
      hint: 'it must be {"documents": [{"file": "<name in the held-out folder>", "prompts": ["..."]}]}',
    });
  }
  const docs: FidelityDocument[] = [];
  for (const entry of parsed.documents.slice(0, maxDocs)) {
    if (basename(entry.file) !== entry.file) throw new KdnError('INVALID_ARGUMENT', `document "${entry.file}" must be a plain file name`);
    const path = join(heldoutDir, entry.file);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new KdnError('NOT_FOUND', `held-out document ${path} cannot be read: ${(err as Error).message}`);
    }
    docs.push({ file: entry.file, text, prompts: entry.prompts.slice(0, maxPrompts) });
  }
  return docs;
}

/** A document and its prompts as token ids, the document cut to fit the context the benchmarks build from it. */
export interface TokenizedDocument {
  file: string;
  tokens: number[];
  prompts: number[][];
}

/**
 * Tokenizes `docs`, cutting each document so that it, up to three more chunks of `chunk` tokens (the composed set's),
 * its longest prompt and an `answer`-token answer fit in `capacity` after a BOS, and to at most `maxDocTokens`.
 */
export function tokenizeDocuments(
  tokenizer: Tokenizer,
  docs: readonly FidelityDocument[],
  limits: { capacity: number; chunk: number; answer: number; maxDocTokens: number },
): TokenizedDocument[] {
  return docs.map((d) => {
    const prompts = d.prompts.map((p) => tokenizer.encode(p, { addSpecialTokens: false }));
    const longest = Math.max(...prompts.map((p) => p.length));
    const room = limits.capacity - 1 - longest - limits.answer - 3 * limits.chunk;
    if (room < 1)
      throw new KdnError(
        'CONTEXT_TOO_LONG',
        `prompts of ${longest} tokens and ${limits.answer}-token answers leave no room for a document`,
      );
    return {
      file: d.file,
      tokens: tokenizer.encode(d.text, { addSpecialTokens: false }).slice(0, Math.min(limits.maxDocTokens, room)),
      prompts,
    };
  });
}

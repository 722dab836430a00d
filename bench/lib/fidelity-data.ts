/** The fidelity benchmark's document set: held-out documents and the continuation prompts written about them. */
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { z } from 'zod';
import { KdnError } from '../../common/errors.ts';

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

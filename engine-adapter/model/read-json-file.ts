import { readFile } from 'node:fs/promises';
import { KdnError } from '../../common/errors.ts';

/** Reads a model directory's JSON file; a missing or unparsable file is MODEL_INVALID naming the path. */
export async function readModelJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new KdnError('MODEL_INVALID', missing ? `model file missing: ${path}` : `cannot read model file ${path}`, {
      hint: 'point --model at a Hugging Face model directory (config.json, *.safetensors, tokenizer.json)',
      cause: err,
    });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new KdnError('MODEL_INVALID', `model file is not valid JSON: ${path}`, { cause: err });
  }
}

/** Like readModelJson, but an absent file is `undefined` (for optional files such as generation_config.json). */
export async function readOptionalModelJson(path: string): Promise<unknown> {
  try {
    return await readModelJson(path);
  } catch (err) {
    if (err instanceof KdnError && (err.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return undefined;
    throw err;
  }
}

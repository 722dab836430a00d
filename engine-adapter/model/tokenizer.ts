import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { KdnError } from '../../common/errors.ts';
import type { ChatMessage, Tokenizer } from '../types.ts';
import type { ModelConfig } from './config.ts';
import { readModelJson, readOptionalModelJson } from './read-json-file.ts';

/** tokenizer_config.json writes special tokens either as strings or as AddedToken objects. */
function tokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

/** chat_template is a string, or a list of named templates of which 'default' is the chat one. */
function pickChatTemplate(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = value as { name?: unknown; template?: unknown }[];
    const t = named.find((x) => x.name === 'default') ?? named[0];
    return typeof t?.template === 'string' ? t.template : undefined;
  }
  return undefined;
}

class ModelTokenizer implements Tokenizer {
  readonly bosTokenId: number | undefined;
  readonly eosTokenIds: number[];
  private readonly template: Template | undefined;

  constructor(
    private readonly hf: HfTokenizer,
    private readonly bosToken: string | null | undefined,
    private readonly eosToken: string | undefined,
    templateSource: string | undefined,
    config: ModelConfig | undefined,
  ) {
    const id = (token: string | null | undefined): number | undefined => (typeof token === 'string' ? hf.token_to_id(token) : undefined);
    // tokenizer_config.json's bos_token is what encoding adds; Qwen sets it to null while config.json still names
    // a bos id, so the config is only the fallback when the tokenizer does not say.
    this.bosTokenId = bosToken === null ? undefined : (id(bosToken) ?? config?.bosTokenId);
    const eos = new Set(config?.eosTokenIds ?? []);
    const eosId = id(eosToken);
    if (eosId !== undefined) eos.add(eosId);
    this.eosTokenIds = [...eos];
    this.template = templateSource === undefined ? undefined : new Template(templateSource);
  }

  encode(text: string, options?: { addSpecialTokens?: boolean }): number[] {
    return this.hf.encode(text, { add_special_tokens: options?.addSpecialTokens ?? true }).ids;
  }

  decode(ids: number[], options?: { skipSpecialTokens?: boolean }): string {
    // tokenizers.js rejects an empty list; the streaming decoder asks for one routinely.
    if (ids.length === 0) return '';
    return this.hf.decode(ids, { skip_special_tokens: options?.skipSpecialTokens ?? false });
  }

  applyChatTemplate(messages: ChatMessage[]): string {
    if (!this.template) {
      throw new KdnError('INVALID_ARGUMENT', 'this model has no chat template', {
        hint: 'run without --chat, or add chat_template to tokenizer_config.json',
      });
    }
    return this.template.render({
      messages,
      add_generation_prompt: true,
      bos_token: this.bosToken ?? '',
      eos_token: this.eosToken ?? '',
    });
  }
}

/**
 * Loads tokenizer.json and tokenizer_config.json from a model directory. The chat template comes from
 * tokenizer_config.json or, in newer checkpoints, chat_template.jinja. Stop tokens are the union of the config's
 * eos ids (config.json and generation_config.json, via `config`) and the tokenizer's eos_token.
 */
export async function loadTokenizer(modelDir: string, config?: ModelConfig): Promise<Tokenizer> {
  const tokenizerJson = await readModelJson(join(modelDir, 'tokenizer.json'));
  const tokenizerConfig = (await readOptionalModelJson(join(modelDir, 'tokenizer_config.json'))) ?? {};
  if (typeof tokenizerJson !== 'object' || tokenizerJson === null || typeof tokenizerConfig !== 'object' || tokenizerConfig === null) {
    throw new KdnError('MODEL_INVALID', `tokenizer files in ${modelDir} are not JSON objects`);
  }
  let hf: HfTokenizer;
  try {
    hf = new HfTokenizer(tokenizerJson, tokenizerConfig);
  } catch (err) {
    throw new KdnError('MODEL_INVALID', `cannot build the tokenizer from ${join(modelDir, 'tokenizer.json')}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const cfg = tokenizerConfig as Record<string, unknown>;
  let template = pickChatTemplate(cfg.chat_template);
  if (template === undefined) {
    template = await readFile(join(modelDir, 'chat_template.jinja'), 'utf8').catch(() => undefined);
  }
  const bos = cfg.bos_token === null ? null : tokenContent(cfg.bos_token);
  return new ModelTokenizer(hf, bos, tokenContent(cfg.eos_token), template, config);
}

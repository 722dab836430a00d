import { basename } from 'node:path';
import type { ChatMessage, Engine, GeneratedToken } from '../../engine-adapter/types.ts';
import type { Tenancy } from '../auth/tenancy.ts';
import { ANSWER_STOP_STRINGS, questionPrompt } from '../query/prompt.ts';
import type { AnswerRequest, QueryService } from '../query/query-service.ts';
import type { QueryMode, QueryOutcome } from '../query/run-query.ts';

/** The knowledge a request asks for, in the client's plain namespace name. */
export interface KnowledgeInput {
  namespace: string;
  /** Document ids or titles, used whole and in this order; absent means retrieval. */
  documents?: string[];
  topK: number;
  mode: QueryMode;
  blendRatio?: number;
  /** Time to first token the chunks' stored level is picked for. */
  ttftTargetMs?: number;
}

/** How to generate: sampling, where to stop, and the caller's hooks for streaming and going away. */
export interface GenerationInput {
  maxTokens: number;
  temperature: number;
  topP?: number;
  seed?: number;
  stopStrings?: string[];
  signal?: AbortSignal;
  onToken?: (token: GeneratedToken) => void;
}

/**
 * Answers a tenant's questions (POST /v1/query) and completions (the OpenAI-style routes): scopes the namespace
 * to the tenant (kdn/auth/tenancy.ts), builds the prompt and hands the request to the QueryService.
 */
export class AnswerService {
  /** The served model's name, as the OpenAI-style routes call it. */
  readonly modelId: string;

  constructor(private readonly parts: { queries: QueryService; tenancy: Tenancy; engine: Engine }) {
    this.modelId = basename(parts.engine.info.path);
  }

  /** A question after the knowledge, in the one prompt format of POST /v1/query; the answer stops before a next question. */
  ask(tenant: string, question: string, knowledge: KnowledgeInput, generation: GenerationInput): Promise<QueryOutcome> {
    const text = { searchText: question, promptText: questionPrompt(question) };
    return this.run(tenant, text, knowledge, { stopStrings: ANSWER_STOP_STRINGS, ...generation });
  }

  /** A chat in the model's template; retrieval searches with the last user message. */
  chat(tenant: string, messages: ChatMessage[], knowledge: KnowledgeInput | undefined, generation: GenerationInput): Promise<QueryOutcome> {
    const promptText = this.withoutLeadingBos(this.parts.engine.tokenizer.applyChatTemplate(messages));
    const lastUser = messages.findLast((m) => m.role === 'user');
    return this.run(tenant, { searchText: lastUser?.content ?? promptText, promptText }, knowledge, generation);
  }

  /** A raw prompt continued as it is; retrieval searches with it. */
  complete(tenant: string, prompt: string, knowledge: KnowledgeInput | undefined, generation: GenerationInput): Promise<QueryOutcome> {
    return this.run(tenant, { searchText: prompt, promptText: prompt }, knowledge, generation);
  }

  private run(
    tenant: string,
    text: { searchText: string; promptText: string },
    knowledge: KnowledgeInput | undefined,
    generation: GenerationInput,
  ): Promise<QueryOutcome> {
    const request: AnswerRequest = {
      tenant,
      ...text,
      mode: knowledge?.mode ?? 'inject',
      ...(knowledge?.blendRatio === undefined ? {} : { blendRatio: knowledge.blendRatio }),
      ...(knowledge?.ttftTargetMs === undefined ? {} : { ttftTargetMs: knowledge.ttftTargetMs }),
      ...generation,
      stopStrings: generation.stopStrings ?? [],
    };
    if (knowledge) {
      request.knowledge = {
        namespace: this.parts.tenancy.scope(tenant, knowledge.namespace, 'read'),
        topK: knowledge.topK,
        ...(knowledge.documents ? { documents: knowledge.documents } : {}),
      };
    }
    return this.parts.queries.answer(request);
  }

  /** Chat templates often start with the BOS text; kdn prefills the BOS token itself before the knowledge. */
  private withoutLeadingBos(text: string): string {
    const { tokenizer } = this.parts.engine;
    if (tokenizer.bosTokenId === undefined) return text;
    const bosText = tokenizer.decode([tokenizer.bosTokenId], { skipSpecialTokens: false });
    return bosText !== '' && text.startsWith(bosText) ? text.slice(bosText.length) : text;
  }
}

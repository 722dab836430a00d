import type { Command } from 'commander';
import { clientFor, formatBytes, withServer } from '../client-options.ts';
import { printJsonOr } from '../printable.ts';

interface DocsFlags {
  server: string;
  apiKey?: string;
  namespace?: string;
  json?: boolean;
}

export function register(program: Command): void {
  const docs = program.command('docs').description('list, show and delete knowledge documents');

  withServer(docs.command('list', { isDefault: true }).description('list the documents of a namespace'))
    .option('--namespace <name>', 'namespace (default "default")')
    .option('--json', 'print JSON')
    .action(async (flags: DocsFlags) => {
      const list = await clientFor(flags).listDocuments(flags.namespace);
      printJsonOr(flags.json, list, () =>
        list.documents.length === 0
          ? [`no documents in namespace "${list.namespace}"`]
          : list.documents.map((d) => `${d.id}  ${d.title}  ${d.chunks} chunks, ${d.tokens} tokens, ${formatBytes(d.bytes)} ${d.codec}`),
      );
    });

  withServer(docs.command('show').description("show a document's chunks, sizes and where they are cached").argument('<id-or-title>'))
    .option('--namespace <name>', 'namespace (default "default")')
    .option('--json', 'print JSON')
    .action(async (id: string, flags: DocsFlags) => {
      const doc = (await clientFor(flags).document(id, flags.namespace)) as {
        id: string;
        title: string;
        codec: string;
        tokens: number;
        bytes: number;
        chunks: {
          index: number;
          tokens: number;
          independent: { bytes: number; cached?: { tier?: string | null; edge?: string | null; error?: string } };
        }[];
      };
      printJsonOr(flags.json, doc, () => [
        `${doc.id}  ${doc.title}  ${doc.tokens} tokens, ${formatBytes(doc.bytes)} ${doc.codec}`,
        ...doc.chunks.map((c) => {
          const where = c.independent.cached;
          return `  #${c.index} ${c.tokens} tokens ${formatBytes(c.independent.bytes)} ${where?.tier ? `${where.tier} @ ${where.edge}` : (where?.error ?? 'not cached')}`;
        }),
      ]);
    });

  withServer(docs.command('delete').description('delete a document: manifest, origin objects, edge copies').argument('<id-or-title>'))
    .option('--namespace <name>', 'namespace (default "default")')
    .option('--json', 'print JSON')
    .action(async (id: string, flags: DocsFlags) => {
      const result = (await clientFor(flags).deleteDocument(id, flags.namespace)) as {
        deleted: { id: string; title: string };
        objects: { deleted: number };
      };
      printJsonOr(flags.json, result, () => [
        `deleted ${result.deleted.title} (${result.deleted.id}), ${result.objects.deleted} KV objects removed`,
      ]);
    });
}

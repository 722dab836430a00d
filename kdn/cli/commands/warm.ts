import type { Command } from 'commander';
import { KdnError } from '../../../common/errors.ts';
import { EdgeClient, type WarmSummary } from '../../../edge/client/client.ts';
import { clientFor, collect, formatBytes, withServer } from '../client-options.ts';
import { printable } from '../printable.ts';
import { Progress } from '../progress.ts';

interface WarmFlags {
  server: string;
  apiKey?: string;
  namespace?: string;
  doc?: string[];
  edges?: string;
  json?: boolean;
}

/**
 * `kdn warm`: asks kdn which chunk objects a namespace (or some documents) has and which edges it uses, then has
 * each object's owner edge fetch it from the origin, so the next queries find everything at the edges.
 */
async function warm(flags: WarmFlags): Promise<void> {
  const plan = await clientFor(flags).warmPlan({
    ...(flags.namespace ? { namespace: flags.namespace } : {}),
    ...(flags.doc ? { documents: flags.doc } : {}),
  });
  const edgeUrls = flags.edges
    ? flags.edges
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : plan.edges;
  if (plan.objects.length === 0) {
    const summary: WarmSummary = { keys: 0, warmed: 0, present: 0, failed: 0, bytes: 0 };
    process.stdout.write(flags.json ? `${JSON.stringify(summary)}\n` : `nothing to warm in namespace "${plan.namespace}"\n`);
    return;
  }
  // The plan carries a token for POST /warm; this machine does not hold the edge secret.
  const token = plan.edgeToken?.token;
  const edges = new EdgeClient({ edges: edgeUrls, ...(token ? { signer: () => token } : {}) });
  const progress = new Progress('warm');
  let done = 0;
  let bytes = 0;
  try {
    const summary = await edges.warm(
      plan.objects.map((o) => o.key),
      (p) => {
        done++;
        bytes += p.bytes;
        if (p.status === 'failed')
          progress.note(printable(`failed ${p.key} at ${p.edge || 'no edge'}: ${p.error?.message ?? 'unknown error'}`));
        if (!flags.json) progress.update(done, plan.objects.length, formatBytes(bytes));
      },
    );
    if (!flags.json) progress.finish();
    process.stdout.write(
      flags.json
        ? `${JSON.stringify({ ...summary, edges: edgeUrls, documents: plan.documents.length })}\n`
        : `warmed ${summary.warmed} objects (${formatBytes(summary.bytes)}), ${summary.present} already present, ${summary.failed} failed, ` +
            `${plan.documents.length} documents on ${edgeUrls.length} edges\n`,
    );
    if (summary.failed > 0) {
      throw new KdnError('EDGE_UNAVAILABLE', `${summary.failed} of ${summary.keys} objects could not be warmed`, {
        hint: 'check the edges and the origin, then run kdn warm again',
      });
    }
  } finally {
    edges.close();
  }
}

export function register(program: Command): void {
  withServer(
    program
      .command('warm')
      .description("bring a namespace's (or some documents') KV objects into the edges that own them")
      .option('--namespace <name>', 'namespace (default "default")')
      .option('--doc <id-or-title>', 'warm only this document (repeatable)', collect)
      .option('--edges <urls>', "edge URLs as this machine reaches them (default: kdn's list)")
      .option('--json', 'print the summary as JSON'),
  ).action(warm);
}

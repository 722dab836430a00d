import { expect } from 'chai';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkImport, findViolations, relativeImports } from './import-rules.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('dependency rules (docs/ARCHITECTURE.md)', () => {
  it('holds for every relative import in the tree', () => {
    const { files, imports, violations } = findViolations(ROOT);
    expect(files, 'source files found').to.be.greaterThan(200);
    expect(imports, 'relative imports found').to.be.greaterThan(500);
    expect(violations.map((v) => `${v.from} -> ${v.to}: ${v.rule}`)).to.deep.equal([]);
  });

  it('reads static, re-exported, side-effect and dynamic imports, multi-line and double-quoted ones included', () => {
    const source = [
      "import { a } from './a.ts';",
      "import {\n  b,\n  c,\n} from '../b.ts';",
      "export { d } from './d.ts';",
      "import './side.ts';",
      "const e = await import('./e.ts');",
      'import { f } from "./double-quoted.ts";',
      "import { z } from 'zod';",
    ].join('\n');
    expect(relativeImports(source).sort()).to.deep.equal(['../b.ts', './a.ts', './d.ts', './double-quoted.ts', './e.ts', './side.ts']);
  });

  it('refuses the arrows the layout forbids', () => {
    const broken: Array<[string, string]> = [
      ['bench/ttft.ts', 'test/kv-object/kv-data.ts'],
      ['edge/server/server.ts', 'kdn/config.ts'],
      ['storage/keys.ts', 'edge/client/client.ts'],
      ['kdn/query/kv-fetcher.ts', 'edge/server/tiered-cache.ts'],
      ['kdn/api/routes/ops.ts', 'edge/server/main.ts'],
      ['kdn/server.ts', 'edge/server/server.ts'],
      ['edge/client/client.ts', 'edge/server/stats.ts'],
      ['edge/server/server.ts', 'edge/client/client-http.ts'],
      ['edge/protocol.ts', 'edge/server/config.ts'],
      ['common/errors.ts', 'storage/keys.ts'],
      ['fixtures/kv-data.ts', 'engine-adapter/types.ts'],
      ['kdn/query/query-service.ts', 'kdn/api/metrics.ts'],
      ['kdn/config.ts', 'kdn/auth/rate-limit.ts'],
      ['kdn/services/document-service.ts', 'kdn/api/schemas.ts'],
      ['kdn/query/query-service.ts', 'kdn/services/answer-service.ts'],
      ['tools/gpu/profile-forward.ts', 'test/engine/temp-models.ts'],
      ['bench/run.ts', '../elsewhere/notes.ts'],
      ['docs2/x.ts', 'common/errors.ts'],
    ];
    for (const [from, to] of broken) expect(checkImport(from, to), `${from} -> ${to}`).to.not.equal(undefined);
  });

  it('allows the arrows the layout names', () => {
    const fine: Array<[string, string]> = [
      ['kdn/query/run-query.ts', 'engine-adapter/types.ts'],
      ['kdn/query/kv-fetcher.ts', 'edge/client/client.ts'],
      ['kdn/api/routes/ops.ts', 'edge/protocol.ts'],
      ['kdn/server.ts', 'edge/server/main.ts'],
      ['kdn/cli/commands/edge.ts', 'edge/server/config.ts'],
      ['edge/server/server.ts', 'edge/protocol.ts'],
      ['edge/client/client.ts', 'edge/protocol.ts'],
      ['edge/server/server.ts', 'edge/server/auth.ts'],
      ['kdn/api/routes/query.ts', 'kdn/query/query-service.ts'],
      ['kdn/api/routes/documents.ts', 'kdn/services/document-service.ts'],
      ['kdn/server.ts', 'kdn/services/job-service.ts'],
      ['kdn/services/document-service.ts', 'kdn/services/object-purge.ts'],
      ['kdn/cli/commands/serve.ts', 'kdn/server.ts'],
      ['bench/delivery.ts', 'kdn/query/kv-fetcher.ts'],
      ['bench/ttft.ts', 'fixtures/kv-data.ts'],
      ['tools/gpu/profile-support.ts', 'bench/lib/shapes.ts'],
      ['test/kdn/e2e.test.ts', 'fixtures/processes.ts'],
    ];
    for (const [from, to] of fine) expect(checkImport(from, to), `${from} -> ${to}`).to.equal(undefined);
  });
});

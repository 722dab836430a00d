import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { allowedMethods, findRoute, ROUTES, routePaths } from '../../kdn/api/route-table.ts';
import { README, REGENERATE, withApiList } from '../../tools/readme-api.ts';
import { KEYS, startSecurityStack, type SecurityStack } from '../security/support/stack.ts';

describe('route table (kdn/api/route-table.ts)', () => {
  it("is README.md's API list", () => {
    const readme = readFileSync(README, 'utf8');
    expect(withApiList(readme) === readme, `README.md's API list differs from the route table: run ${REGENERATE}`).to.equal(true);
  });

  it('names each method and path once, each with a description', () => {
    const keys = ROUTES.map((route) => `${route.method} ${route.path}`);
    expect(new Set(keys).size).to.equal(keys.length);
    for (const route of ROUTES) expect(route.description.length, `${route.method} ${route.path}`).to.be.greaterThan(10);
  });

  it('matches paths as express does: parameters are one segment, case is ignored, a trailing slash is allowed', () => {
    expect(findRoute('GET', '/v1/documents/abc')?.path).to.equal('/v1/documents/:id');
    expect(findRoute('HEAD', '/V1/Jobs/')?.path).to.equal('/v1/jobs');
    expect(findRoute('GET', '/v1/documents/a/b')).to.equal(undefined);
    expect(findRoute('GET', '/v1/documents//')).to.equal(undefined);
    expect(findRoute('PUT', '/v1/documents')).to.equal(undefined);
    expect(allowedMethods('/v1/documents')).to.deep.equal(['GET', 'HEAD', 'POST']);
    expect(allowedMethods('/v1/jobs/0123456789abcdef')).to.deep.equal(['DELETE', 'GET', 'HEAD']);
    expect(allowedMethods('/v1/nothing')).to.deep.equal([]);
  });
});

describe('routes of a running kdn: every table route mounted, 405 for a wrong method, 404 listing the paths', function () {
  this.timeout(120_000);
  let stack: SecurityStack;

  before(async () => {
    stack = await startSecurityStack();
  });

  after(async () => {
    await stack?.close();
  });

  it('answers every route of the table with its handler, never "no route" nor 405', async () => {
    for (const route of ROUTES) {
      const path = route.path.replace(':id', '0123456789abcdef');
      const answer = await stack.call(KEYS.operator, route.method, path, route.method === 'POST' ? {} : undefined);
      const error = answer.body.error as { code?: string; kdn_code?: string; message: string } | undefined;
      const where = `${route.method} ${path}: ${answer.status} ${JSON.stringify(answer.body)}`;
      expect(answer.status, where).to.not.equal(405);
      expect(error?.message ?? '', where).to.not.match(/^no route/);
    }
  });

  it('answers a known path asked with another method 405, with Allow and the API error body', async () => {
    const cases: Array<[string, string, string]> = [
      ['PUT', '/v1/documents', 'GET, HEAD, POST'],
      ['PATCH', '/v1/documents/0123456789abcdef', 'DELETE, GET, HEAD'],
      ['GET', '/v1/query', 'POST'],
      ['DELETE', '/v1/warm/plan', 'POST'],
      ['POST', '/v1/status', 'GET, HEAD'],
      ['POST', '/healthz', 'GET, HEAD'],
    ];
    for (const [method, path, allow] of cases) {
      const answer = await stack.call(KEYS.alice, method, path);
      expect(answer.status, `${method} ${path}`).to.equal(405);
      expect(answer.headers.get('allow'), `${method} ${path}`).to.equal(allow);
      expect(answer.body.error?.code).to.equal('METHOD_NOT_ALLOWED');
      expect(answer.body.error?.message).to.contain(method).and.contain(path);
      expect(answer.body.error?.hint).to.contain(allow);
    }
  });

  it("answers a wrong method on an OpenAI-style path 405 in OpenAI's error shape", async () => {
    const answer = await stack.call(KEYS.alice, 'DELETE', '/v1/chat/completions');
    expect(answer.status).to.equal(405);
    expect(answer.headers.get('allow')).to.equal('POST');
    expect(answer.body.error).to.include({
      type: 'invalid_request_error',
      code: 'method_not_allowed',
      kdn_code: 'METHOD_NOT_ALLOWED',
      param: null,
    });
  });

  it('answers OPTIONS on a known path with its methods in Allow', async () => {
    const answer = await stack.call(KEYS.alice, 'OPTIONS', '/v1/documents');
    expect(answer.status).to.equal(200);
    expect(answer.headers.get('allow')).to.equal('GET, HEAD, POST');
  });

  it('still asks for a key first: an unauthenticated wrong method is 401, not 405', async () => {
    const answer = await stack.call(undefined, 'PUT', '/v1/documents');
    expect(answer.status).to.equal(401);
  });

  it('answers an unknown path 404 whose hint lists every path of the table', async () => {
    const answer = await stack.call(KEYS.alice, 'GET', '/v1/nothing-here');
    expect(answer.status).to.equal(404);
    expect(answer.body.error?.code).to.equal('NOT_FOUND');
    for (const path of routePaths()) expect(answer.body.error?.hint).to.contain(path);
  });
});

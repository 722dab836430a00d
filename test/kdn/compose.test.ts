import { readFile } from 'node:fs/promises';
import { expect } from 'chai';
import { parse } from 'yaml';
import { resolveKdnConfig } from '../../kdn/config.ts';
import { resolveEdgeConfig } from '../../edge/config.ts';

interface Service {
  image?: string;
  build?: string;
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
}

/** Docker does not run here: the compose file is checked for the topology it must describe. */
describe('docker-compose.yml', () => {
  let services: Record<string, Service>;

  before(async () => {
    const doc = parse(await readFile('docker-compose.yml', 'utf8'), { merge: true }) as { services: Record<string, Service> };
    services = doc.services;
  });

  const edges = (): [string, Service][] => Object.entries(services).filter(([, s]) => s.command?.[0] === 'edge');

  it('has a MinIO origin with a health check, and a one-shot job that creates its bucket', () => {
    expect(services.minio?.image).to.match(/^minio\/minio:/);
    expect(services.minio?.ports).to.include('9000:9000');
    expect(services.minio?.healthcheck?.test.join(' ')).to.contain('mc ready');
    const init = services['minio-init']!;
    expect(init.depends_on?.minio?.condition).to.equal('service_healthy');
    expect(init.entrypoint?.join(' ')).to.match(/mc mb --ignore-existing local\/kdn/);
  });

  it('has two or more edges built from the Dockerfile, with health checks, disk paths and the MinIO origin', async () => {
    const list = edges();
    expect(list.length).to.be.at.least(2);
    const hostPorts = new Set<string>();
    for (const [name, edge] of list) {
      expect(edge.build, name).to.equal('.');
      expect(edge.image, name).to.equal('kdn:latest');
      expect(edge.healthcheck?.test.join(' '), name).to.contain('/healthz');
      expect(edge.depends_on?.['minio-init']?.condition, name).to.equal('service_completed_successfully');
      for (const port of edge.ports ?? []) hostPorts.add(port.split(':')[0]!);
      const flags = edge.command!;
      const flag = (f: string): string | undefined => flags[flags.indexOf(f) + 1];
      const config = resolveEdgeConfig(
        { port: flag('--port'), host: flag('--host'), diskPath: flag('--disk-path'), memoryBytes: flag('--memory'), diskBytes: flag('--disk') },
        edge.environment,
      );
      expect(config.host).to.equal('0.0.0.0');
      expect(config.originUrl).to.match(/^s3:\/\/kdn\?endpoint=http:\/\/minio:9000/);
      expect(edge.environment?.AWS_ACCESS_KEY_ID).to.be.a('string');
    }
    expect(hostPorts.size).to.equal(list.length);
  });

  it("has kdn pointing at every edge and at the MinIO origin, started after the edges are healthy", () => {
    const kdn = services.kdn!;
    expect(kdn.image).to.equal('kdn:latest');
    expect(kdn.ports).to.include('8080:8080');
    expect(kdn.healthcheck?.test.join(' ')).to.contain('http://127.0.0.1:8080/healthz');
    const config = resolveKdnConfig({}, kdn.environment);
    expect(config.host).to.equal('0.0.0.0');
    expect(config.port).to.equal(8080);
    expect(config.origin).to.equal(edges()[0]![1].environment?.KDN_EDGE_ORIGIN);
    expect(config.edges).to.have.members(edges().map(([name, edge]) => `http://${name}:${edge.command![edge.command!.indexOf('--port') + 1]}`));
    for (const [name] of edges()) expect(kdn.depends_on?.[name]?.condition).to.equal('service_healthy');
    expect(kdn.environment?.AWS_SECRET_ACCESS_KEY).to.equal(services.minio?.environment?.MINIO_ROOT_PASSWORD);
  });

  it('has a Dockerfile whose entrypoint is the kdn command', async () => {
    const dockerfile = await readFile('Dockerfile', 'utf8');
    expect(dockerfile).to.match(/^FROM node:20/m);
    expect(dockerfile).to.contain('ENTRYPOINT ["node", "bin/kdn.js"]');
    expect(dockerfile).to.match(/npm ci --omit=dev/);
  });
});

import { execFile, spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { parse } from 'yaml';
import { resolveEdgeConfig } from '../../edge/server/config.ts';
import { resolveKdnConfig } from '../../kdn/config.ts';

const run = promisify(execFile);

interface Service {
  image?: string;
  build?: string | { context: string };
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string>;
  ports?: (string | { host_ip?: string; published?: string | number })[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  restart?: string;
  profiles?: string[];
  deploy?: { resources?: { reservations?: { devices?: { driver?: string; count?: number; capabilities?: string[] }[] } } };
  volumes?: (string | { source?: string; target?: string; read_only?: boolean })[];
}
type Compose = {
  services: Record<string, Service>;
  volumes?: Record<string, { driver?: string; driver_opts?: Record<string, string> } | null>;
};

interface Mount {
  volume: string;
  path: string;
  readOnly: boolean;
}

/** A service's volume mounts, from either of compose's syntaxes ("name:/path:ro" or {source, target, read_only}). */
function mounts(service: Service): Mount[] {
  return (service.volumes ?? []).map((v) => {
    if (typeof v !== 'string') return { volume: v.source ?? '', path: v.target ?? '', readOnly: v.read_only === true };
    const [volume = '', path = '', mode] = v.split(':');
    return { volume, path, readOnly: mode === 'ro' };
  });
}

const hasDockerCompose = spawnSync('docker-compose', ['version'], { stdio: 'ignore' }).status === 0;

/** docker-compose.yml as written (anchors merged, ${...} left as they are). */
async function rawCompose(): Promise<Compose> {
  return parse(await readFile('docker-compose.yml', 'utf8'), { merge: true }) as Compose;
}

/** The compose file and the env generator copied to a temp project folder, as a user's checkout would have them. */
async function project(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'kdn-compose-'));
  await mkdir(join(dir, 'tools'));
  await copyFile('docker-compose.yml', join(dir, 'docker-compose.yml'));
  await copyFile('tools/compose-env.sh', join(dir, 'tools', 'compose-env.sh'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

describe('docker-compose.yml and the Dockerfile', () => {
  it('builds one image, shared by every kdn and edge service, with restart policies and loopback-only ports', async () => {
    const { services } = await rawCompose();
    const built = Object.entries(services).filter(([, s]) => s.build !== undefined);
    expect(built.map(([name]) => name)).to.deep.equal(['kdn-image']);
    const image = built[0]![1].image;
    const kdnServices = Object.entries(services).filter(([, s]) => s.command?.[0] === 'edge' || s.command?.[0] === 'serve');
    expect(kdnServices.length).to.be.at.least(4);
    for (const [name, s] of kdnServices) {
      expect(s.image, name).to.equal(image);
      expect(s.restart, name).to.equal('unless-stopped');
      for (const port of s.ports ?? []) expect(String(port), name).to.match(/^127\.0\.0\.1:/);
    }
    for (const port of services.minio!.ports ?? []) expect(String(port)).to.match(/^127\.0\.0\.1:/);
  });

  it('takes every secret from .env, with no default', async () => {
    const text = await readFile('docker-compose.yml', 'utf8');
    for (const name of [
      'MINIO_ROOT_USER',
      'MINIO_ROOT_PASSWORD',
      'KDN_S3_ACCESS_KEY',
      'KDN_S3_SECRET_KEY',
      'KDN_EDGE_SECRET',
      'KDN_API_KEYS',
    ]) {
      const uses = [...text.matchAll(new RegExp(`\\$\\{${name}([^}]*)\\}`, 'g'))].map((m) => m[1]!);
      expect(uses.length, name).to.be.greaterThan(0);
      for (const rest of uses) expect(rest, name).to.match(/^:\?/);
    }
    expect(text).to.not.match(/secret-key|change-me/);
  });

  it('has a Dockerfile on Node 22 LTS that runs as a non-root user with a health check', async () => {
    const dockerfile = await readFile('Dockerfile', 'utf8');
    expect(dockerfile).to.match(/^FROM node:22-bookworm-slim$/m);
    expect(dockerfile).to.match(/^USER node$/m);
    expect(dockerfile).to.match(/^HEALTHCHECK .*\n?.*\/healthz/m);
    expect(dockerfile).to.contain('libvulkan1');
    expect(dockerfile).to.contain('ENTRYPOINT ["node", "bin/kdn.js"]');
    expect(dockerfile).to.match(/npm ci --omit=dev/);
    expect(await readFile('.dockerignore', 'utf8')).to.match(/^\.env$/m);
  });

  describe('checked by docker-compose config', function () {
    this.timeout(60_000);
    let dir: string;
    let cleanup: () => Promise<void>;

    before(async function () {
      if (!hasDockerCompose) {
        if (process.env.CI === 'true') throw new Error('docker-compose is not installed: .ci/run installs it from Debian');
        console.log('      skipped: docker-compose is not installed (apt-get install docker-compose)');
        this.skip();
      }
      ({ dir, cleanup } = await project());
    });
    after(async () => {
      await cleanup?.();
    });

    const config = async (args: string[] = []): Promise<Compose> => {
      const { stdout } = await run('docker-compose', [...args, 'config'], { cwd: dir });
      return parse(stdout) as Compose;
    };

    it('refuses to start without .env, naming the command that writes it', async () => {
      const failed = spawnSync('docker-compose', ['config'], { cwd: dir, encoding: 'utf8' });
      expect(failed.status).to.not.equal(0);
      expect(failed.stderr).to.contain('run tools/compose-env.sh first');
    });

    it('resolves with the generated .env into the topology kdn and the edges accept', async () => {
      await run('bash', ['tools/compose-env.sh'], { cwd: dir });
      const { services } = await config();
      const edges = Object.entries(services).filter(([, s]) => s.command?.[0] === 'edge');
      expect(edges.length).to.be.at.least(2);
      for (const [name, edge] of edges) {
        const flags = edge.command!;
        const flag = (f: string): string | undefined => flags[flags.indexOf(f) + 1];
        const resolved = resolveEdgeConfig(
          { port: flag('--port'), diskPath: flag('--disk-path'), memoryBytes: flag('--memory'), diskBytes: flag('--disk') },
          { KDN_EDGE_HOST: '0.0.0.0', ...edge.environment },
        );
        expect(resolved.originUrl, name).to.match(/^s3:\/\/kdn\?endpoint=http:\/\/minio:9000/);
        expect(resolved.secret, name).to.have.length(64);
        expect(edge.healthcheck?.test.join(' '), name).to.contain('/healthz');
        expect(edge.depends_on?.['kdn-image']?.condition, name).to.equal('service_completed_successfully');
      }
      const kdn = services.kdn!;
      const resolved = resolveKdnConfig({}, kdn.environment);
      expect(resolved.origin).to.equal(edges[0]![1].environment?.KDN_EDGE_ORIGIN);
      expect(resolved.edges).to.have.members(edges.map(([name]) => `http://${name}:8790`));
      expect(resolved.edgeSecret).to.equal(edges[0]![1].environment?.KDN_EDGE_SECRET);
      // kdn and the edges use kdn's own bucket user, never the MinIO root.
      expect(kdn.environment?.AWS_ACCESS_KEY_ID).to.not.equal(services.minio!.environment?.MINIO_ROOT_USER);
      expect(kdn.environment?.AWS_SECRET_ACCESS_KEY).to.not.equal(services.minio!.environment?.MINIO_ROOT_PASSWORD);
      expect(kdn.environment?.KDN_API_KEYS).to.match(/^kdn_[0-9a-f]{48}=default$/);
      for (const [name, edge] of edges) expect(edge.environment?.MINIO_ROOT_PASSWORD, name).to.equal(undefined);
    });

    it("gives each edge's shared-memory mirror a tmpfs volume of its own, which kdn reads at the same path", async () => {
      const compose = await config(['--profile', 'cpu', '--profile', 'gpu']);
      const edges = Object.entries(compose.services).filter(([, s]) => s.command?.[0] === 'edge');
      const kdns = Object.entries(compose.services).filter(([, s]) => s.command?.[0] === 'serve');
      expect(kdns.map(([name]) => name)).to.have.members(['kdn', 'kdn-gpu']);
      const writers = new Map<string, string>();
      for (const [name, edge] of edges) {
        const shmDir = resolveEdgeConfig({}, edge.environment).shmDir;
        expect(shmDir, name).to.be.a('string');
        const own = mounts(edge).find((m) => m.path === shmDir);
        expect(own?.readOnly, `${name} writes its mirror`).to.equal(false);
        expect(writers.has(own!.volume), `${own!.volume} has one writer`).to.equal(false);
        writers.set(own!.volume, name);
        const volume = compose.volumes?.[own!.volume];
        expect(volume?.driver_opts?.type, own!.volume).to.equal('tmpfs');
        // The image's user (node) owns it, and only that user may enter it.
        expect(volume?.driver_opts?.o, own!.volume)
          .to.match(/(^|,)uid=1000(,|$)/)
          .and.match(/(^|,)mode=0?700(,|$)/);
        // An edge's folder name is only valid for kdn where kdn sees the volume at the same path.
        for (const [kdnName, kdn] of kdns) {
          const seen = mounts(kdn).find((m) => m.volume === own!.volume);
          expect(seen, `${kdnName} mounts ${own!.volume}`).to.deep.equal({ volume: own!.volume, path: shmDir, readOnly: true });
        }
      }
      expect(writers.size).to.equal(edges.length);
    });

    it('has a gpu profile: kdn on WebGPU with one NVIDIA GPU reserved and the graphics capability for Vulkan', async () => {
      const { services } = await config(['--profile', 'gpu']);
      const gpu = services['kdn-gpu']!;
      expect(gpu.profiles).to.deep.equal(['gpu']);
      expect(services.kdn!.profiles).to.deep.equal(['cpu']);
      expect(gpu.environment).to.include({ KDN_BACKEND: 'webgpu', NVIDIA_VISIBLE_DEVICES: 'all' });
      expect(gpu.environment?.NVIDIA_DRIVER_CAPABILITIES?.split(',')).to.include('graphics');
      expect(gpu.deploy?.resources?.reservations?.devices).to.deep.equal([{ driver: 'nvidia', count: 1, capabilities: ['gpu'] }]);
      expect(gpu.image).to.equal(services['kdn-image']!.image);
    });
  });
});

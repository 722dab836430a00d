/**
 * The machine code NVIDIA's Vulkan driver compiles for the engine's tensor-core kernels, with each kernel's highest
 * register and instruction mix: the one view of what the WGSL becomes on the GPU. Run on the host with the NVIDIA GPU:
 *   node --import tsx tools/gpu/kernel-sass.ts --out <dir> [--nvdisasm /usr/local/cuda/bin/nvdisasm]
 * It writes <dir>/<kernel>.sass and <dir>/summary.json. --cache <folder> reads a shader cache made earlier instead (any
 * program run with __GL_SHADER_DISK_CACHE_PATH=<folder> __GL_SHADER_DISK_CACHE_SKIP_CLEANUP=1); its objects are then
 * named by number, in build order.
 *
 * How: a child process opens the device, whose probe builds the tensor-core kernels (tensorKernelNames order), with
 * the driver's shader cache pointed at a private folder. The cache holds zstd frames, each after its compressed and
 * raw sizes; the kernels' objects come in build order. An object's code ends in a run of NOPs; its start is found by
 * bisecting on the longest tail nvdisasm decodes. "registers" in the summary is the highest register used, plus one.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Decompress } from 'fzstd';
import { openDevice, tensorKernelNames } from '../../engine-adapter/webgpu/device.ts';

const CHILD = 'KDN_KERNEL_SASS_CHILD';
if (process.env[CHILD]) {
  const opened = await openDevice();
  await opened.device.queue.onSubmittedWorkDone();
  process.exit(0);
}

const { values } = parseArgs({
  options: {
    out: { type: 'string', default: 'kernel-sass' },
    nvdisasm: { type: 'string', default: 'nvdisasm' },
    arch: { type: 'string', default: 'SM90' },
    cache: { type: 'string' },
  },
});

const started = Date.now();
const cache = values.cache ?? probeIntoPrivateCache();
console.error(`shader cache ready after ${((Date.now() - started) / 1000).toFixed(1)} s`);
const scratch = mkdtempSync(join(tmpdir(), 'kdn-sass-'));

function probeIntoPrivateCache(): string {
  const dir = mkdtempSync(join(tmpdir(), 'kdn-shader-cache-'));
  const child = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url)], {
    stdio: 'inherit',
    env: {
      ...process.env,
      [CHILD]: '1',
      __GL_SHADER_DISK_CACHE: '1',
      __GL_SHADER_DISK_CACHE_PATH: dir,
      __GL_SHADER_DISK_CACHE_SKIP_CLEANUP: '1',
    },
  });
  if (child.status !== 0) throw new Error(`the device probe failed (exit ${child.status})`);
  return dir;
}

const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const NOP = Buffer.from('18790000000000000000000000c00f00', 'hex');
const INSTRUCTION = 16;

function cacheFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.bin'))
    .map((e) => join(e.parentPath, e.name))
    .sort();
}

/** The cache file's zstd frames, decompressed, in file order. */
function frames(file: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = file.indexOf(ZSTD_MAGIC);
  while (at >= 8) {
    const size = file.readUInt32LE(at - 8);
    const rawSize = file.readUInt32LE(at - 4);
    const parts: Uint8Array[] = [];
    try {
      new Decompress((chunk) => parts.push(chunk)).push(file.subarray(at, at + size), true);
    } catch {
      // The sized span ends in a few bytes of the cache's own after the frame, which the decoder rejects as a second
      // frame once the first is out; the raw size below checks that the frame itself decoded whole.
    }
    const raw = Buffer.concat(parts);
    if (raw.length !== rawSize) throw new Error(`cache frame at ${at}: decoded ${raw.length} bytes of ${rawSize}`);
    out.push(raw);
    at = file.indexOf(ZSTD_MAGIC, at + size);
  }
  return out;
}

function disassemble(code: Buffer): string | null {
  const path = join(scratch, 'code.bin');
  writeFileSync(path, code);
  const r = spawnSync(values.nvdisasm, ['-b', values.arch, path], { encoding: 'utf8', timeout: 30_000 });
  if (r.error) throw new Error(`nvdisasm could not run (${r.error.message}); pass --nvdisasm <path>`);
  return r.status === 0 ? r.stdout : null;
}

/** The disassembly of an object's code, or null when it holds none. */
function objectSass(object: Buffer): string | null {
  const nops = object.indexOf(NOP);
  if (nops < 0) return null;
  let end = nops;
  while (object.subarray(end, end + INSTRUCTION).equals(NOP)) end += INSTRUCTION;
  // Any tail of the code decodes and any window reaching before it does not: bisect on whole instructions.
  const decodes = (instructions: number): boolean => disassemble(object.subarray(end - instructions * INSTRUCTION, end)) !== null;
  let good = (end - nops) / INSTRUCTION + 1;
  let bad = Math.floor(end / INSTRUCTION) + 1;
  if (!decodes(good)) return null;
  while (bad - good > 1) {
    const mid = Math.floor((good + bad) / 2);
    if (decodes(mid)) good = mid;
    else bad = mid;
  }
  return disassemble(object.subarray(end - good * INSTRUCTION, end));
}

function summarize(sass: string): Record<string, number> {
  const ops = [...sass.matchAll(/\*\/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)/g)].map((m) => m[1]!);
  const count = (...names: string[]): number => ops.filter((op) => names.includes(op)).length;
  const registers = Math.max(...[...sass.matchAll(/\bR(\d+)\b/g)].map((m) => Number(m[1]))) + 1;
  return {
    registers,
    instructions: ops.length,
    HMMA: count('HMMA'),
    LDG: count('LDG'),
    STG: count('STG'),
    LDS: count('LDS'),
    LDSM: count('LDSM'),
    STS: count('STS'),
    BAR: count('BAR'),
    spills: count('STL', 'LDL'),
  };
}

const sass = cacheFiles(cache)
  .flatMap((file) => frames(readFileSync(file)))
  .map(objectSass)
  .filter((s): s is string => s !== null);
const names = values.cache ? [] : tensorKernelNames();
if (!values.cache && sass.length !== names.length)
  console.error(`found ${sass.length} code objects for ${names.length} kernels; named by order`);
mkdirSync(values.out, { recursive: true });
const summary: Record<string, Record<string, number>> = {};
console.error(`disassembled ${sass.length} objects after ${((Date.now() - started) / 1000).toFixed(1)} s`);
sass.forEach((text, i) => {
  const name = names[i] ?? `object-${i}`;
  writeFileSync(join(values.out, `${name.replaceAll(' ', '-')}.sass`), text);
  summary[name] = summarize(text);
});
writeFileSync(join(values.out, 'summary.json'), `${JSON.stringify(summary, null, 1)}\n`);
console.log(JSON.stringify(summary, null, 1));
rmSync(scratch, { recursive: true, force: true });
if (!values.cache) rmSync(cache, { recursive: true, force: true });

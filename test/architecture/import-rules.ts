/**
 * The dependency rules of docs/ARCHITECTURE.md as data, and a checker that reads every source file's relative
 * imports and reports the ones that break a rule. Package imports (node:, npm) are not the layout's concern.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

/** Top-level folders and the top-level folders each may import; '*' is every folder. */
export const MAY_IMPORT: Readonly<Record<string, readonly string[] | '*'>> = {
  common: [],
  storage: ['common'],
  edge: ['storage', 'common'],
  'engine-adapter': ['storage', 'common'],
  kdn: ['edge', 'engine-adapter', 'storage', 'common'],
  bin: ['kdn'],
  fixtures: ['storage', 'common'],
  bench: ['kdn', 'edge', 'engine-adapter', 'storage', 'common', 'fixtures'],
  tools: ['bench', 'kdn', 'edge', 'engine-adapter', 'storage', 'common', 'fixtures'],
  test: '*',
};

/**
 * Inside edge/: the server (the edge process) and the client (what kdn talks to edges with) share only the wire
 * protocol, so either can change behind it.
 */
const EDGE_PROTOCOL = 'edge/protocol.ts';
const EDGE_SIDES = ['edge/server/', 'edge/client/'];
/** kdn talks to edges through the client and the protocol only ... */
const KDN_MAY_IMPORT_FROM_EDGE = ['edge/client/', EDGE_PROTOCOL];
/** ... except the two commands that start an edge process (`kdn serve` embeds one, `kdn edge` runs one). */
const EDGE_LAUNCHERS = ['kdn/server.ts', 'kdn/cli/commands/edge.ts'];
const EDGE_LAUNCH_API = ['edge/server/main.ts', 'edge/server/config.ts'];

/** Inside kdn/: the entry points that wire everything; no other kdn module imports them. */
const KDN_ENTRY = ['kdn/server.ts', 'kdn/api/', 'kdn/cli/'];
/** The API's services by role: they sit between the entry points and the parts, so only those two import them. */
const KDN_SERVICES = 'kdn/services/';
/** Read by every part of kdn, so it imports no other kdn module but these. */
const KDN_CONFIG = 'kdn/config.ts';
const KDN_CONFIG_MAY_IMPORT = ['kdn/default-model.ts'];

const SOURCE = /\.(ts|js|cjs|mjs)$/;
const SPECIFIERS = [
  /\bfrom\s*(['"])([^'"]+)\1/g, // import ... from '...', export ... from '...'
  /\bimport\s*(['"])([^'"]+)\1/g, // import '...' (side effects only)
  /\bimport\(\s*(['"])([^'"]+)\1\s*\)/g, // import('...')
  /\brequire\(\s*(['"])([^'"]+)\1\s*\)/g,
];

export interface Violation {
  from: string;
  to: string;
  rule: string;
}

/** The relative import specifiers of one file's source text. */
export function relativeImports(source: string): string[] {
  const found: string[] = [];
  for (const pattern of SPECIFIERS) {
    for (const match of source.matchAll(pattern)) if (match[2]!.startsWith('.')) found.push(match[2]!);
  }
  return found;
}

const topFolder = (path: string): string => path.split('/')[0]!;
const isEntry = (path: string): boolean => KDN_ENTRY.some((entry) => path === entry || path.startsWith(entry));

/** Checks one import: `from` and `to` are repository-relative paths with forward slashes. */
export function checkImport(from: string, to: string): Violation | undefined {
  if (to.startsWith('../') || to === '..') return { from, to, rule: 'imports stay inside the repository' };
  const source = topFolder(from);
  const target = topFolder(to);
  const allowed = MAY_IMPORT[source];
  if (allowed === undefined) return { from, to, rule: `${source}/ is not in ARCHITECTURE.md's layout table` };
  if (source !== target && allowed !== '*' && !allowed.includes(target)) {
    return { from, to, rule: `${source}/ may import only ${allowed.join(', ') || 'nothing'}` };
  }
  if (source === 'edge' && target === 'edge') return checkEdgeSides(from, to);
  if (source === 'kdn' && target === 'edge' && !KDN_MAY_IMPORT_FROM_EDGE.some((allowedPath) => to.startsWith(allowedPath))) {
    if (EDGE_LAUNCHERS.includes(from) && EDGE_LAUNCH_API.includes(to)) return undefined;
    const launchers = EDGE_LAUNCHERS.join(', ');
    return { from, to, rule: `kdn/ imports only ${KDN_MAY_IMPORT_FROM_EDGE.join(' and ')} of edge/ (and ${launchers} start an edge)` };
  }
  if (source === 'kdn' && target === 'kdn') {
    if (isEntry(to) && !isEntry(from)) return { from, to, rule: `only ${KDN_ENTRY.join(', ')} import kdn's entry points` };
    if (to.startsWith(KDN_SERVICES) && !from.startsWith(KDN_SERVICES) && !isEntry(from)) {
      return { from, to, rule: `only ${KDN_ENTRY.join(', ')} import ${KDN_SERVICES}` };
    }
    if (from === KDN_CONFIG && !KDN_CONFIG_MAY_IMPORT.includes(to)) {
      return { from, to, rule: `${KDN_CONFIG} imports no other kdn module (every part reads it)` };
    }
  }
  return undefined;
}

function checkEdgeSides(from: string, to: string): Violation | undefined {
  const sideOf = (path: string): string | undefined => EDGE_SIDES.find((side) => path.startsWith(side));
  const fromSide = sideOf(from);
  const toSide = sideOf(to);
  if (from === EDGE_PROTOCOL && toSide !== undefined) return { from, to, rule: `${EDGE_PROTOCOL} imports neither side of the edge` };
  if (fromSide !== undefined && toSide !== undefined && fromSide !== toSide) {
    return { from, to, rule: `${fromSide} and the other side of the edge share only ${EDGE_PROTOCOL}` };
  }
  if (fromSide !== undefined && toSide === undefined && to !== EDGE_PROTOCOL) {
    return { from, to, rule: `edge/ holds only server/, client/ and ${EDGE_PROTOCOL}` };
  }
  return undefined;
}

function* sourceFiles(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === 'node_modules' || entry.name.startsWith('.')) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* sourceFiles(path);
    else if (SOURCE.test(entry.name)) yield path;
  }
}

/** Every broken rule among the relative imports of the source files under the layout's folders. */
export function findViolations(root: string): { files: number; imports: number; violations: Violation[] } {
  const violations: Violation[] = [];
  let files = 0;
  let imports = 0;
  const toRepoPath = (path: string): string => relative(root, path).split(sep).join('/');
  for (const folder of Object.keys(MAY_IMPORT)) {
    for (const file of sourceFiles(join(root, folder))) {
      files++;
      for (const specifier of relativeImports(readFileSync(file, 'utf8'))) {
        imports++;
        const violation = checkImport(toRepoPath(file), toRepoPath(resolve(dirname(file), specifier)));
        if (violation) violations.push(violation);
      }
    }
  }
  return { files, imports, violations };
}

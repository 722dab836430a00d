import { createHash } from 'node:crypto';

/**
 * Rendezvous (highest random weight) hashing: every node gets a pseudo-random weight for a key, and the key's order
 * of nodes is by falling weight. Adding a node moves to it only the keys it now wins (about 1/n); removing one moves
 * only its own keys, each to its next node. Ties (practically impossible) break by node name so all clients agree.
 */
export function rendezvousOrder(key: string, nodes: readonly string[]): string[] {
  return nodes
    .map((node) => ({ node, weight: weightOf(node, key) }))
    .sort((a, b) => b.weight - a.weight || (a.node < b.node ? -1 : a.node > b.node ? 1 : 0))
    .map(({ node }) => node);
}

/** The node that owns `key`: the first of its rendezvous order. */
export function rendezvousOwner(key: string, nodes: readonly string[]): string {
  const order = rendezvousOrder(key, nodes);
  if (order.length === 0) throw new RangeError('rendezvous hashing needs at least one node');
  return order[0]!;
}

function weightOf(node: string, key: string): number {
  // 48 bits of sha256 fit a double exactly; "\n" cannot occur in keys, so node/key pairs cannot collide by shifting.
  return createHash('sha256').update(node).update('\n').update(key).digest().readUIntBE(0, 6);
}

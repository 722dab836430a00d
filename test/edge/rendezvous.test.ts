import { expect } from 'chai';
import { rendezvousOrder, rendezvousOwner } from '../../edge/client/rendezvous.ts';

const KEYS = Array.from({ length: 6_000 }, (_, i) => `ns/doc-${i % 97}/chunk-${i}.kv`);
const nodes = (n: number): string[] => Array.from({ length: n }, (_, i) => `http://10.0.0.${i + 1}:8790`);

describe('rendezvous hashing', () => {
  it('orders every node once, deterministically and independent of the list order', () => {
    const five = nodes(5);
    const order = rendezvousOrder('kv/a/key.kv', five);
    expect([...order].sort()).to.deep.equal([...five].sort());
    expect(rendezvousOrder('kv/a/key.kv', [...five].reverse())).to.deep.equal(order);
    expect(rendezvousOwner('kv/a/key.kv', five)).to.equal(order[0]);
  });

  it('spreads keys evenly', () => {
    const five = nodes(5);
    const counts = new Map<string, number>();
    for (const key of KEYS) {
      const owner = rendezvousOwner(key, five);
      counts.set(owner, (counts.get(owner) ?? 0) + 1);
    }
    const shares = [...counts.values()].map((count) => count / KEYS.length);
    console.log(`      owner shares over 5 nodes: ${shares.map((s) => s.toFixed(3)).join(' ')}`);
    for (const share of shares) expect(share).to.be.within(0.16, 0.24);
  });

  it('moves only about 1/n of the keys, all to the new node, when a node is added', () => {
    const before = nodes(5);
    const after = nodes(6);
    const added = after[5]!;
    let moved = 0;
    for (const key of KEYS) {
      const owner = rendezvousOwner(key, after);
      if (owner !== rendezvousOwner(key, before)) {
        moved += 1;
        expect(owner).to.equal(added);
      }
    }
    console.log(`      adding a 6th node moved ${(moved / KEYS.length).toFixed(3)} of the keys (ideal 1/6 = 0.167)`);
    expect(moved / KEYS.length).to.be.within(0.13, 0.21);
  });

  it("moves only the removed node's keys, each to its next node, when a node is removed", () => {
    const before = nodes(5);
    const removed = before[2]!;
    const after = before.filter((node) => node !== removed);
    let moved = 0;
    for (const key of KEYS) {
      const order = rendezvousOrder(key, before);
      const owner = rendezvousOwner(key, after);
      if (order[0] === removed) {
        moved += 1;
        expect(owner).to.equal(order[1]);
      } else {
        expect(owner).to.equal(order[0]);
      }
    }
    expect(moved / KEYS.length).to.be.within(0.16, 0.24);
  });

  it('refuses an empty node list', () => {
    expect(() => rendezvousOwner('k', [])).to.throw(RangeError);
  });
});

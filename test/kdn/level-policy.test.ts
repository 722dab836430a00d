import { expect } from 'chai';
import type { ContextPiece } from '../../kdn/query/context-plan.ts';
import { DeliveryEstimate } from '../../kdn/query/delivery-estimate.ts';
import { pickLevel } from '../../kdn/query/level-policy.ts';

/** A chunk stored as int8 (`bytes`), with transform levels at a quarter and a sixteenth of that unless `levels` says. */
function piece(index: number, bytes: number, levels = true): ContextPiece {
  return {
    docId: 'd',
    title: 't',
    index,
    score: null,
    tokenIds: [1, 2, 3],
    kind: 'chained',
    codec: 'int8',
    key: `int8/${index}`,
    bytes,
    levels: levels
      ? [
          { codec: 'transform:x4', key: `x4/${index}`, bytes: bytes / 4 },
          { codec: 'transform:x16', key: `x16/${index}`, bytes: bytes / 16 },
        ]
      : [],
  };
}

const fetched = (bytes: number, edge = 'e'): { edge: string; bytes: number }[] => [{ edge, bytes }];

describe('kdn/query level policy and delivery estimate', () => {
  const options = { seedBytesPerSecond: 1e6, weight: 0.5, minBytes: 1000, sampleBytes: 1e6, probeAfter: 100 };

  it('moves the estimate toward measured fetches and leaves tiny ones out', () => {
    const delivery = new DeliveryEstimate(options);
    expect(delivery.expectedMs(1e6)).to.equal(1000);
    delivery.record(fetched(500), 1);
    expect(delivery.bytesPerSecond()).to.equal(1e6);
    delivery.record(fetched(3e6), 1000);
    expect(delivery.bytesPerSecond()).to.equal(2e6);
    delivery.record(fetched(1e6), 0);
    expect(delivery.bytesPerSecond()).to.equal(2e6);
    // A large slow fetch measures throughput, and lowers it.
    delivery.record(fetched(1e6), 1000);
    expect(delivery.bytesPerSecond()).to.equal(1.5e6);
  });

  it('lets a fetch below the sample size raise the estimate but never lower it', () => {
    const delivery = new DeliveryEstimate(options);
    delivery.record(fetched(200_000), 1000);
    expect(delivery.bytesPerSecond()).to.equal(1e6);
    delivery.record(fetched(200_000), 50);
    expect(delivery.bytesPerSecond()).to.equal(2.5e6);
  });

  it('keeps a figure per edge, and the overall one for an edge not measured yet', () => {
    const delivery = new DeliveryEstimate({ ...options, weight: 1 });
    delivery.record(fetched(4e6, 'a'), 1000);
    delivery.record(fetched(1e6, 'b'), 1000);
    expect(delivery.bytesPerSecond('a')).to.equal(4e6);
    expect(delivery.bytesPerSecond('b')).to.equal(1e6);
    expect(delivery.bytesPerSecond('c')).to.equal(1e6);
    expect(delivery.bytesPerSecond()).to.equal(1e6);
    // Two chunks of 160 kB in int8, one on each edge: the slow edge's 160 ms is the query's, not 320 ms at 1 MB/s.
    const pieces = [piece(0, 160_000), piece(1, 160_000)];
    const edgeOf = (key: string): string => (key.endsWith('/0') ? 'a' : 'b');
    const split = pickLevel(pieces, 200, delivery, edgeOf).choice!;
    expect(split).to.deep.include({ codec: 'int8', bytes: 320_000, expectedFetchMs: 160, bytesPerSecond: 2e6 });
    expect(pickLevel(pieces, 200, delivery).choice!.codec).to.equal('transform:x4');
  });

  it('probes one level above what fits after queries without a large sample, then goes back', () => {
    const delivery = new DeliveryEstimate({ ...options, probeAfter: 2 });
    const pieces = [piece(0, 160_000), piece(1, 160_000)];
    const pick = (): string => pickLevel(pieces, 30, delivery).choice!.codec;
    expect(pick()).to.equal('transform:x16');
    delivery.record(fetched(20_000), 25);
    delivery.record(fetched(20_000), 25);
    expect(delivery.probeDue).to.equal(true);
    const probe = pickLevel(pieces, 30, delivery).choice!;
    expect(probe).to.deep.include({ codec: 'transform:x4', probe: true });
    expect(pick()).to.equal('transform:x16');
    // A probe's fetch replaces the figure (small fetches may have left it stale), within the rule for small fetches.
    delivery.record(fetched(80_000), 10, true);
    expect(delivery.bytesPerSecond()).to.equal(8e6);
    delivery.record(fetched(80_000), 160, true);
    expect(delivery.bytesPerSecond()).to.equal(8e6);
    delivery.record(fetched(2e6), 1000, true);
    expect(delivery.bytesPerSecond()).to.equal(2e6);
    // A large sample counts as one: no probe is due after it.
    delivery.record(fetched(20_000), 25);
    delivery.record(fetched(2e6), 1000);
    delivery.record(fetched(20_000), 25);
    expect(delivery.probeDue).to.equal(false);
  });

  it('recovers from a low estimate on a link whose small fetches are mostly latency', () => {
    // The link: 20 ms per query plus 10 MB/s, so int8 (320 kB) arrives in 52 ms, within the 60 ms target.
    const delivery = new DeliveryEstimate({ seedBytesPerSecond: 1e6, weight: 0.5, minBytes: 1000, sampleBytes: 300_000, probeAfter: 3 });
    const pieces = [piece(0, 160_000), piece(1, 160_000)];
    const picks: string[] = [];
    for (let q = 0; q < 40; q++) {
      const { choice } = pickLevel(pieces, 60, delivery);
      picks.push(choice!.codec);
      delivery.record(fetched(choice!.bytes), 20 + choice!.bytes / 10_000, choice!.probe);
    }
    expect(picks[0]).to.equal('transform:x16');
    expect(picks.slice(-8)).to.deep.equal(Array(8).fill('int8'));
  });

  it('picks the largest level that fits the target, else the smallest; without a target the main codec', () => {
    const delivery = new DeliveryEstimate(options);
    // Two chunks of 160 kB in int8: 320 ms at 1 MB/s, x4 80 ms, x16 20 ms.
    const pieces = [piece(0, 160_000), piece(1, 160_000)];
    const at = (target: number | undefined): string[] => pickLevel(pieces, target, delivery).pieces.map((p) => `${p.codec} ${p.key}`);
    expect(at(undefined)).to.deep.equal(['int8 int8/0', 'int8 int8/1']);
    expect(pickLevel(pieces, undefined, delivery).choice).to.equal(null);
    expect(at(400)).to.deep.equal(['int8 int8/0', 'int8 int8/1']);
    expect(at(100)).to.deep.equal(['transform:x4 x4/0', 'transform:x4 x4/1']);
    expect(at(30)).to.deep.equal(['transform:x16 x16/0', 'transform:x16 x16/1']);
    const none = pickLevel(pieces, 1, delivery);
    expect(none.pieces.map((p) => p.codec)).to.deep.equal(['transform:x16', 'transform:x16']);
    expect(none.choice).to.deep.include({ codec: 'transform:x16', bytes: 20_000, expectedFetchMs: 20, ttftTargetMs: 1, probe: false });
  });

  it('keeps the main codec for chunks stored without the level picked', () => {
    const delivery = new DeliveryEstimate(options);
    const picked = pickLevel([piece(0, 160_000), piece(1, 160_000, false)], 30, delivery).pieces;
    expect(picked.map((p) => p.codec)).to.deep.equal(['transform:x16', 'int8']);
    expect(pickLevel([piece(0, 1000, false)], 1, delivery).choice).to.equal(null);
  });
});

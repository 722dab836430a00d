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

describe('kdn/query level policy and delivery estimate', () => {
  const options = { seedBytesPerSecond: 1e6, weight: 0.5, minBytes: 1000 };

  it('moves the estimate toward measured fetches and leaves small ones out', () => {
    const delivery = new DeliveryEstimate(options);
    expect(delivery.expectedMs(1e6)).to.equal(1000);
    delivery.record(500, 1);
    expect(delivery.bytesPerSecond).to.equal(1e6);
    delivery.record(3e6, 1000);
    expect(delivery.bytesPerSecond).to.equal(2e6);
    delivery.record(1e6, 0);
    expect(delivery.bytesPerSecond).to.equal(2e6);
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
    expect(none.choice).to.deep.include({ codec: 'transform:x16', bytes: 20_000, expectedFetchMs: 20, ttftTargetMs: 1 });
  });

  it('keeps the main codec for chunks stored without the level picked', () => {
    const delivery = new DeliveryEstimate(options);
    const picked = pickLevel([piece(0, 160_000), piece(1, 160_000, false)], 30, delivery).pieces;
    expect(picked.map((p) => p.codec)).to.deep.equal(['transform:x16', 'int8']);
    expect(pickLevel([piece(0, 1000, false)], 1, delivery).choice).to.equal(null);
  });
});

import { expect } from 'chai';
import { gateBatch, LayerGates } from '../../engine-adapter/layer-gates.ts';

describe('LayerGates: a forward waiting on a context that is still being placed', () => {
  it('a wait resolves once its layer is written, flushing what is written only when someone waits on it', async () => {
    let flushes = 0;
    const gates = new LayerGates(4, () => void flushes++);
    const order: string[] = [];
    const second = gates.wait(1).then(() => order.push('layer 1'));
    gates.setWritten(1);
    await Promise.resolve();
    expect(order).to.deep.equal([]);
    gates.setWritten(3);
    await second;
    expect(order).to.deep.equal(['layer 1']);
    // One flush started layers 0-2 on their way: waiting on 0 and 2 now costs none.
    expect(flushes).to.equal(1);
    await gates.wait(0);
    await gates.wait(2);
    expect(flushes).to.equal(1);
    gates.setWritten(4);
    await gates.wait(3);
    expect(flushes).to.equal(2);
  });

  it('a batch of layers: a wait holds out for that many layers from its own (fewer at the end) and says how many are in', async () => {
    let flushes = 0;
    const gates = new LayerGates(10, () => void flushes++, 4);
    let first: number | undefined;
    const waiting = gates.wait(0).then((count) => (first = count));
    gates.setWritten(3);
    await Promise.resolve();
    expect(first).to.equal(undefined);
    gates.setWritten(5);
    await waiting;
    expect(first).to.equal(5);
    // Layers written and flushed already open at once, with the count flushed.
    expect(await gates.wait(4)).to.equal(5);
    expect(flushes).to.equal(1);
    let last: number | undefined;
    const end = gates.wait(8).then((count) => (last = count));
    gates.setWritten(9);
    await Promise.resolve();
    expect(last).to.equal(undefined);
    gates.setWritten(10);
    await end;
    expect(last).to.equal(10);
    expect(flushes).to.equal(2);
    expect(gateBatch(32)).to.equal(4);
    expect(gateBatch(2)).to.equal(1);
  });

  it('a failure rejects present and future waits and resolves `stopped`; counts never go back', async () => {
    const gates = new LayerGates(3);
    const pending = gates.wait(2);
    gates.setWritten(1);
    const err = new Error('stream reset');
    gates.fail(err);
    gates.fail(new Error('later failures are ignored'));
    await gates.stopped;
    for (const p of [pending, gates.wait(0), gates.wait(2)])
      expect(
        await p.then(
          () => null,
          (e: unknown) => e,
        ),
      ).to.equal(err);
    expect(() => gates.setWritten(0)).to.throw(/0 layers written after 1/);
    expect(() => gates.setWritten(4)).to.throw(/of 3/);
  });
});

import { expect } from 'chai';
import { ReusedBuffers } from '../../common/reused-buffers.ts';

describe('ReusedBuffers', () => {
  it('serves a request from a returned buffer large enough, the smallest first', () => {
    const buffers = new ReusedBuffers(8 * 2 ** 20);
    const [a, b] = [buffers.take(3 * 2 ** 20), buffers.take(2 ** 20)];
    buffers.give(a.buffer as ArrayBuffer);
    buffers.give(b.buffer as ArrayBuffer);
    expect(buffers.held).to.equal(4 * 2 ** 20);
    const again = buffers.take(900_000);
    expect(again.buffer).to.equal(b.buffer);
    expect(again.byteLength).to.equal(900_000);
    expect(buffers.stats).to.deep.equal({ reusedBytes: 900_000, freshBytes: 4 * 2 ** 20 });
  });

  it('makes a new buffer rather than serve a request from one over twice its size', () => {
    const buffers = new ReusedBuffers(8 * 2 ** 20);
    const big = buffers.take(4 * 2 ** 20);
    buffers.give(big.buffer as ArrayBuffer);
    expect(buffers.take(2 ** 20).buffer).to.not.equal(big.buffer);
    expect(buffers.take(3 * 2 ** 20).buffer).to.equal(big.buffer);
  });

  it('owns the views it handed out until their buffer comes back, and no other view', () => {
    const buffers = new ReusedBuffers(8 * 2 ** 20);
    const view = buffers.take(100_000);
    expect(buffers.owns(view)).to.equal(true);
    expect(buffers.owns(view.subarray(1))).to.equal(false);
    expect(buffers.owns(new Uint8Array(100_000))).to.equal(false);
    buffers.give(view.buffer as ArrayBuffer);
    expect(buffers.owns(view)).to.equal(false);
    expect(buffers.owns(buffers.take(100_000))).to.equal(true);
  });

  it('holds at most its cap, and nothing with a cap of 0', () => {
    const buffers = new ReusedBuffers(2 ** 20);
    const [a, b] = [buffers.take(700_000), buffers.take(700_000)];
    buffers.give(a.buffer as ArrayBuffer);
    buffers.give(b.buffer as ArrayBuffer);
    expect(buffers.held).to.equal(704 * 1024);
    const none = new ReusedBuffers(0);
    none.give(none.take(1000).buffer as ArrayBuffer);
    expect(none.held).to.equal(0);
  });

  it('drops what it holds after a while without use', async () => {
    const buffers = new ReusedBuffers(2 ** 20, 20);
    buffers.give(buffers.take(1000).buffer as ArrayBuffer);
    expect(buffers.held).to.be.greaterThan(0);
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(buffers.held).to.equal(0);
  });
});

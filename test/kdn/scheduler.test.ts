import { expect } from 'chai';
import { KdnError } from '../../common/errors.ts';
import { EngineScheduler, type WorkOptions } from '../../kdn/scheduler/engine-scheduler.ts';
import { FairQueue } from '../../kdn/scheduler/fair-queue.ts';

/** A task that records its name when it starts and finishes when `release` is called. */
function gate(): { promise: Promise<void>; release: () => void } {
  let release!: () => void;
  const promise = new Promise<void>((resolve) => (release = resolve));
  return { promise, release };
}

describe('kdn/scheduler', () => {
  describe('FairQueue (deficit round robin)', () => {
    it('alternates between tenants by cost, whatever order their work arrived in', () => {
      const queue = new FairQueue<{ tenant: string; cost: number; name: string }>(100);
      for (let i = 0; i < 6; i++) queue.push({ tenant: 'flood', cost: 100, name: `f${i}` });
      queue.push({ tenant: 'quiet', cost: 100, name: 'q0' });
      queue.push({ tenant: 'quiet', cost: 100, name: 'q1' });
      const order: string[] = [];
      for (let item = queue.shift(); item; item = queue.shift()) order.push(item.name);
      expect(order).to.deep.equal(['f0', 'q0', 'f1', 'q1', 'f2', 'f3', 'f4', 'f5']);
      expect(queue.size).to.equal(0);
    });

    it('gives a tenant of large tasks the same share of work units as one of small tasks', () => {
      const queue = new FairQueue<{ tenant: string; cost: number }>(100);
      for (let i = 0; i < 20; i++) queue.push({ tenant: 'big', cost: 400 });
      for (let i = 0; i < 80; i++) queue.push({ tenant: 'small', cost: 100 });
      const served = { big: 0, small: 0 };
      for (let n = 0; n < 40; n++) {
        const item = queue.shift()!;
        served[item.tenant as 'big' | 'small'] += item.cost;
      }
      expect(Math.abs(served.big - served.small)).to.be.at.most(400);
    });

    it('removes a waiting item and forgets a tenant whose queue empties', () => {
      const queue = new FairQueue<{ tenant: string; cost: number }>(10);
      const a = { tenant: 'a', cost: 5 };
      queue.push(a);
      expect(queue.remove(a)).to.equal(true);
      expect(queue.remove(a)).to.equal(false);
      expect(queue.size).to.equal(0);
      expect(queue.shift()).to.equal(undefined);
    });
  });

  describe('EngineScheduler', () => {
    const work = (tenant: string, priority: WorkOptions['priority'], signal?: AbortSignal): WorkOptions => ({
      tenant,
      priority,
      cost: 100,
      ...(signal ? { signal } : {}),
    });

    it('runs one task at a time, interactive before background, and tenants fairly within a class', async () => {
      const scheduler = new EngineScheduler({ maxWaitingPerTenant: 100 });
      const order: string[] = [];
      let active = 0;
      const task = (name: string) => async (): Promise<void> => {
        active++;
        expect(active).to.equal(1);
        order.push(name);
        await new Promise((resolve) => setImmediate(resolve));
        active--;
      };
      const first = gate();
      const blocker = scheduler.run(() => first.promise, work('a', 'background'));
      const all = [
        scheduler.run(task('ingest-a1'), work('a', 'background')),
        scheduler.run(task('ingest-a2'), work('a', 'background')),
        scheduler.run(task('query-a1'), work('a', 'interactive')),
        scheduler.run(task('query-a2'), work('a', 'interactive')),
        scheduler.run(task('query-b1'), work('b', 'interactive')),
      ];
      expect(scheduler.depth).to.equal(6);
      first.release();
      await Promise.all([blocker, ...all]);
      expect(order).to.deep.equal(['query-a1', 'query-b1', 'query-a2', 'ingest-a1', 'ingest-a2']);
      expect(scheduler.depth).to.equal(0);
    });

    it('still runs background work while interactive work keeps arriving', async () => {
      const scheduler = new EngineScheduler({ maxWaitingPerTenant: 1000 });
      const order: string[] = [];
      const first = gate();
      const blocker = scheduler.run(() => first.promise, work('a', 'interactive'));
      const ingest = scheduler.run(async () => void order.push('ingest'), work('a', 'background'));
      const queries = Array.from({ length: 30 }, (_, i) =>
        scheduler.run(async () => void order.push(`q${i}`), work(`t${i}`, 'interactive')),
      );
      first.release();
      await Promise.all([blocker, ingest, ...queries]);
      expect(order.indexOf('ingest')).to.be.greaterThan(0).and.lessThan(20);
    });

    it('takes a cancelled task out of the queue at once with the reason it was given', async () => {
      const scheduler = new EngineScheduler({ maxWaitingPerTenant: 10 });
      const first = gate();
      const blocker = scheduler.run(() => first.promise, work('a', 'interactive'));
      const abort = new AbortController();
      let ran = false;
      const waiting = scheduler.run(async () => void (ran = true), work('b', 'interactive', abort.signal));
      expect(scheduler.depth).to.equal(2);
      abort.abort(new KdnError('TIMEOUT', 'deadline passed while queued'));
      const err = await waiting.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(KdnError).with.property('code', 'TIMEOUT');
      expect(scheduler.depth).to.equal(1);
      first.release();
      await blocker;
      expect(ran).to.equal(false);
    });

    it("refuses a tenant's interactive task past its cap with RATE_LIMITED and a retry time, other tenants still get in", async () => {
      const scheduler = new EngineScheduler({ maxWaitingPerTenant: 2 });
      const first = gate();
      const blocker = scheduler.run(() => first.promise, work('a', 'interactive'));
      const ok = [scheduler.run(async () => 1, work('a', 'interactive')), scheduler.run(async () => 2, work('a', 'interactive'))];
      const err = await scheduler
        .run(async () => 3, work('a', 'interactive'))
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(err).to.be.instanceOf(KdnError).with.property('code', 'RATE_LIMITED');
      expect((err as KdnError).details?.retryAfterS)
        .to.be.a('number')
        .and.at.least(1);
      const other = scheduler.run(async () => 4, work('b', 'interactive'));
      first.release();
      expect(await Promise.all([blocker, ...ok, other])).to.deep.equal([undefined, 1, 2, 4]);
    });

    it('with maxInteractive 3 runs up to 3 queries at once, and background work alone after them', async () => {
      const depths: number[] = [];
      const scheduler = new EngineScheduler({ maxWaitingPerTenant: 100, maxInteractive: 3, onDepth: (d) => depths.push(d) });
      const started: string[] = [];
      let active = { interactive: 0, background: 0 };
      let most = 0;
      const gates = new Map<string, ReturnType<typeof gate>>();
      const task = (name: string, priority: WorkOptions['priority']) => async (): Promise<void> => {
        active[priority]++;
        most = Math.max(most, active.interactive);
        if (priority === 'background') expect(active).to.deep.equal({ interactive: 0, background: 1 });
        started.push(name);
        const g = gate();
        gates.set(name, g);
        await g.promise;
        active = { ...active, [priority]: active[priority] - 1 };
      };
      const runs = [
        ...['a1', 'a2', 'a3', 'a4'].map((n) => scheduler.run(task(n, 'interactive'), work('a', 'interactive'))),
        ...['b1', 'b2'].map((n) => scheduler.run(task(n, 'interactive'), work('b', 'interactive'))),
        scheduler.run(task('ingest', 'background'), work('a', 'background')),
      ];
      await new Promise((resolve) => setImmediate(resolve));
      // Three start as they arrive; the rest wait for a place.
      expect(started).to.deep.equal(['a1', 'a2', 'a3']);
      expect(scheduler.depth).to.equal(7);
      for (let i = 0; i < 7; i++) {
        while (started.length <= i) await new Promise((resolve) => setImmediate(resolve));
        gates.get(started[i]!)!.release();
      }
      await Promise.all(runs);
      expect([...started].sort()).to.deep.equal(['a1', 'a2', 'a3', 'a4', 'b1', 'b2', 'ingest']);
      expect(most).to.equal(3);
      expect(started.indexOf('ingest')).to.equal(started.length - 1);
      expect(scheduler.depth).to.equal(0);
      // The gauge hears of every change, the last task's end included.
      expect(Math.max(...depths)).to.equal(7);
      expect(depths.at(-1)).to.equal(0);
    });

    it('refuses a maxInteractive that is not a positive integer', () => {
      expect(() => new EngineScheduler({ maxWaitingPerTenant: 1, maxInteractive: 0 })).to.throw(KdnError);
    });

    it('on close refuses waiting and new work, and resolves when the running task ends', async () => {
      const scheduler = new EngineScheduler({ maxWaitingPerTenant: 10 });
      const first = gate();
      let finished = false;
      const running = scheduler.run(
        async () => {
          await first.promise;
          finished = true;
        },
        work('a', 'background'),
      );
      const waiting = scheduler.run(async () => 'never', work('b', 'interactive'));
      const reason = new KdnError('ENGINE_UNAVAILABLE', 'shutting down');
      const closed = scheduler.close(reason);
      expect(
        await waiting.then(
          () => undefined,
          (e: unknown) => e,
        ),
      ).to.equal(reason);
      expect(
        await scheduler
          .run(async () => 'late', work('c', 'interactive'))
          .then(
            () => undefined,
            (e: unknown) => e,
          ),
      ).to.equal(reason);
      first.release();
      await closed;
      expect(finished).to.equal(true);
      await running;
    });
  });
});

import { expect } from 'chai';
import { KdnError } from '../../common/errors.ts';

/** The KdnError a promise rejects with; fails the test when it resolves or rejects with anything else. */
export async function rejection(p: Promise<unknown>): Promise<KdnError> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(KdnError);
    return err as KdnError;
  }
  throw new Error('expected a rejection');
}

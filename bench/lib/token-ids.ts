/** Seeded random token ids: the speed benchmarks' contexts and questions (content does not change the cost). */
export function randomTokenIds(count: number, vocabSize: number, seed: number): number[] {
  let s = (seed * 2654435761) >>> 0 || 1;
  const ids = new Array<number>(count);
  for (let i = 0; i < count; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    ids[i] = (s >>> 0) % vocabSize;
  }
  return ids;
}

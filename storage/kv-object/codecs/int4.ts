import { QuantizedCodec } from './quantized.ts';

/**
 * int4: the int8 layout of ./int8.ts with 4-bit codes (0..15) and, by default, the same 32-long groups.
 * keyCodes and valueCodes are packed two per byte: element i of the [T][C] order lives in byte i >> 1, in the
 * low nibble when i is even and the high nibble when i is odd; each codes section is ceil(n / 2) bytes (then
 * padded to 4). Dequantization is as for int8; error |x - x'| <= scale / 2 with scale ~ (max - min) / 15.
 */
export function int4Codec(groupSize: number): QuantizedCodec {
  return new QuantizedCodec(4, groupSize);
}

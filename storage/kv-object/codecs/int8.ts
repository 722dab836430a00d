import { QuantizedCodec } from './quantized.ts';

/**
 * int8: asymmetric 8-bit quantization, keys per channel, values per token (KIVI-style; see ./quantized.ts).
 *
 * Encoded layer block, for the engine that dequantizes on the GPU. Let T = tokens, C = kvHeads * headDim
 * (channel c = head * headDim + d), G = groupSize, KG = ceil(T / G), VG = ceil(C / G), n = T * C. All numbers
 * little-endian; "f16" is IEEE binary16. Sections follow each other in this order, each zero-padded to a
 * multiple of 4 bytes so every section starts 4-byte aligned (offsets below are before that padding rounds up):
 *   keyScale   f16[KG][C]   scale of channel c over tokens [g*G, min((g+1)*G, T))
 *   keyMin     f16[KG][C]
 *   keyCodes   u8[T][C]     same order as the tensor ([tokens][kvHeads][headDim])
 *   valueScale f16[T][VG]   scale of token t over channels [g*G, min((g+1)*G, C))
 *   valueMin   f16[T][VG]
 *   valueCodes u8[T][C]
 * Dequantize: key[t][c]   = keyMin[t/G][c]   + keyCodes[t][c]   * keyScale[t/G][c]
 *             value[t][c] = valueMin[t][c/G] + valueCodes[t][c] * valueScale[t][c/G]   (integer division)
 * Error: |x - x'| <= scale / 2 of the element's group (scale ~ (max - min) / 255).
 */
export function int8Codec(groupSize: number): QuantizedCodec {
  return new QuantizedCodec(8, groupSize);
}

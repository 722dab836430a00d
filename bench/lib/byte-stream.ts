/** A body already in memory as the byte stream storage/kv-object's streaming reader takes. */
export async function* byteStream(body: Uint8Array): AsyncGenerator<Uint8Array> {
  yield body;
}

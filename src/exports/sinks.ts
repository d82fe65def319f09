import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { Readable, type Writable } from 'node:stream';

/**
 * Writes chunks to a stream, waiting whenever its buffer is full, so a slow reader never
 * makes the export buffer in memory. Returns the bytes written.
 */
export async function writeChunks(
  chunks: AsyncIterable<string>,
  stream: Writable,
): Promise<number> {
  let bytes = 0;
  for await (const chunk of chunks) {
    if (chunk.length === 0) continue;
    bytes += Buffer.byteLength(chunk);
    if (!stream.write(chunk)) await once(stream, 'drain');
  }
  return bytes;
}

/**
 * Writes an export to `path` through `path.partial`, renamed into place only when complete:
 * a failed export never leaves a truncated file under the real name.
 */
export async function writeChunksToFile(
  chunks: AsyncIterable<string>,
  path: string,
): Promise<number> {
  const partial = `${path}.partial`;
  const stream = createWriteStream(partial);
  try {
    const bytes = await writeChunks(chunks, stream);
    stream.end();
    await once(stream, 'finish');
    await rename(partial, path);
    return bytes;
  } catch (error) {
    stream.destroy();
    await rm(partial, { force: true });
    throw error;
  }
}

/**
 * A Readable for an HTTP body, made after the first chunk is in: a bad filter or a failing
 * query before any byte then still answers with a proper error status and body.
 */
export async function readableFromFirstChunk(chunks: AsyncGenerator<string>): Promise<Readable> {
  const first = await chunks.next();
  async function* rest(): AsyncGenerator<string> {
    if (first.done) return;
    yield first.value;
    yield* chunks;
  }
  const readable = Readable.from(rest(), { objectMode: false });
  // A client that goes away stops the export (and returns its connection).
  readable.once('close', () => void chunks.return(undefined).catch(() => {}));
  return readable;
}

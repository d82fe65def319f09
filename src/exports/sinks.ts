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
 * a failed export never leaves a truncated file under the real name. A file that cannot be
 * opened or written (no such directory, a full disk) is an error naming it.
 */
export async function writeChunksToFile(
  chunks: AsyncIterable<string>,
  path: string,
): Promise<number> {
  const partial = `${path}.partial`;
  const stream = createWriteStream(partial);
  // The stream fails on its own schedule (opening happens after this returns): without a
  // listener that is an uncaught 'error' event that kills the process with a stack trace.
  const file: { error: Error | null } = { error: null };
  const failed = new Promise<never>((_, reject) =>
    stream.once('error', (error) => {
      file.error = error;
      reject(error);
    }),
  );
  failed.catch(() => {});
  try {
    const bytes = await Promise.race([writeChunks(chunks, stream), failed]);
    stream.end();
    await Promise.race([once(stream, 'finish'), failed]);
    await rename(partial, path);
    return bytes;
  } catch (error) {
    stream.destroy();
    await rm(partial, { force: true });
    if (file.error && error === file.error)
      throw new Error(`cannot write ${path}: ${file.error.message}`);
    throw error;
  } finally {
    // A write that failed while the export was mid-way leaves the generator suspended: end it
    // (its database cursor is closed).
    await (chunks as AsyncGenerator<string>).return?.(undefined);
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

import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface StaticFile {
  body: Buffer;
  contentType: string;
  /** Strong validator: a hash of the bytes. */
  etag: string;
  cacheControl: string;
}

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

/** Files larger than this are not a dashboard asset; refuse to hold them in memory. */
const STATIC_FILE_BYTES_MAX = 512 * 1024;

/**
 * The dashboard's static directory. tsc does not copy assets, so a build under dist/ reads
 * them from the source tree beside it.
 */
export function dashboardStaticDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, 'static'), join(here, '../../../../src/http/dashboard/static')];
  const found = candidates.find((dir) => existsSync(join(dir, 'index.html')));
  if (!found) throw new Error(`dashboard assets not found (looked in ${candidates.join(', ')})`);
  return found;
}

/**
 * Reads every asset once, at start: a handful of small files, served from memory. The page
 * itself is revalidated on every load (no-cache + ETag) so a deploy shows at once; its
 * script and styles may be reused for five minutes.
 */
export function loadStaticFiles(dir: string): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>();
  for (const name of readdirSync(dir).sort()) {
    const contentType = CONTENT_TYPES[extname(name)];
    if (!contentType) continue;
    const body = readFileSync(join(dir, name));
    if (body.length > STATIC_FILE_BYTES_MAX)
      throw new Error(`dashboard asset ${name} is over ${STATIC_FILE_BYTES_MAX} bytes`);
    const hash = createHash('sha256').update(body).digest('base64url').slice(0, 27);
    files.set(name, {
      body,
      contentType,
      etag: `"${hash}"`,
      cacheControl: name.endsWith('.html') ? 'no-cache' : 'public, max-age=300',
    });
  }
  return files;
}

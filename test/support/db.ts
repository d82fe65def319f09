import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { withDatabase } from './global-setup.js';

export interface TestDatabase {
  url: string;
  name: string;
  /** A pool of its own; tests that need separate connections open more with `newPool`. */
  pool: pg.Pool;
  newPool(max?: number): pg.Pool;
  drop(): Promise<void>;
}

/** A fresh, migrated database for one test file (a copy of the template). */
export async function createTestDatabase(): Promise<TestDatabase> {
  const adminUrl = inject('pgAdminUrl');
  const template = inject('pgTemplate');
  const name = `${template.replace(/_template$/, '')}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`create database ${name} template ${template}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(adminUrl, name);
  const pools: pg.Pool[] = [];
  const newPool = (max = 10): pg.Pool => {
    const pool = new pg.Pool({ connectionString: url, max });
    pool.on('error', () => {});
    pools.push(pool);
    return pool;
  };
  const pool = newPool(10);
  return {
    url,
    name,
    pool,
    newPool,
    async drop() {
      await Promise.all(pools.map((p) => p.end().catch(() => {})));
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(`drop database if exists ${name} with (force)`);
      } finally {
        await client.end();
      }
    },
  };
}

/**
 * A ledger writer to kill: `node --import tsx test/support/ledger-writer.ts URL USER COUNT`
 * posts COUNT charges of 0.25 to customer USER (`keyedCharge`, keyed `USER-<i>`), 32 at a
 * time, and prints `written <n>` each time one has committed. Tests SIGKILL it
 * mid-way (test/ledger/faults.test.ts).
 */
import pg from 'pg';
import { PostgresLedger } from '../../ledger/index.js';
import { keyedCharge, TEST_CURRENCIES } from './ledger.js';

const [url, userId, countText] = process.argv.slice(2);
const count = Number(countText);
const pool = new pg.Pool({ connectionString: url, max: 4 });
const ledger = new PostgresLedger({ pool, currencies: TEST_CURRENCIES });
await ledger.init();

let next = 0;
let written = 0;
await Promise.all(
  Array.from({ length: 32 }, async () => {
    for (let i = next++; i < count; i = next++) {
      await ledger.postEntry(keyedCharge(userId!, i));
      written += 1;
      process.stdout.write(`written ${written}\n`);
    }
  }),
);
await ledger.close();
await pool.end();

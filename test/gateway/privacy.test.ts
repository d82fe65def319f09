import { expect, test } from 'vitest';
import type { TestDatabase } from '../support/db.js';
import { userWithKey, type TestService } from '../support/service.js';
import { useGatewayStack, sdk } from './fixtures.js';

let database: TestDatabase;
let service: TestService;

useGatewayStack((stack) => ({ database, service } = stack));

/** Every row of every table of ours, as text. */
async function everythingStored(): Promise<string> {
  const { rows: tables } = await database.pool.query<{ table_name: string }>(
    `select table_name from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE'`,
  );
  const dumps: string[] = [];
  for (const { table_name } of tables) {
    const { rows } = await database.pool.query(`select * from ${table_name}`);
    dumps.push(JSON.stringify(rows));
  }
  return dumps.join('\n');
}

test('prompts and completions are never stored', async () => {
  const { apiKey } = await userWithKey(service, { telegramId: 5001, balance: '1' });
  const client = sdk(service.url, apiKey);
  const secret = 'PURPLE-ELEPHANT-7731 my bank PIN is 4455';
  await client.chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: `${secret} [[tokens=5]]` }],
  });
  const stream = await client.chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: `${secret} again` }],
    stream: true,
  });
  let completion = '';
  for await (const chunk of stream) completion += chunk.choices[0]?.delta?.content ?? '';
  await client.embeddings.create({ model: 'text-embedding-3-small', input: secret });
  await client.chat.completions
    .create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: `${secret} [[fail=500]]` }],
    })
    .catch(() => {});
  await service.http.services.work.drain(5000);

  const stored = await everythingStored();
  expect(stored.length).toBeGreaterThan(1000);
  expect(stored).toContain('gpt-4o-mini');
  expect(stored).not.toContain('PURPLE-ELEPHANT');
  // The sentence, not its digits alone: '4455' turns up in random ids and hashes (a batch id
  // once made this test fail).
  expect(stored).not.toContain('my bank PIN is 4455');
  expect(stored).not.toContain(completion.trim());
  expect(stored).not.toContain('tok3 tok4');
});

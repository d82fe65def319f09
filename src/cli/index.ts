import { runCli } from './main.js';

const code = await runCli(process.argv.slice(2));
process.exitCode = code;
// Roles keep the event loop busy until a signal; one-shot commands end here.
if (!['start', 'serve', 'watch', 'cron', 'demo'].includes(process.argv[2] ?? ''))
  process.exit(code);

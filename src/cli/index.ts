import { runCli } from './main.js';

// Output piped into a reader that stops early (`lingxi ... | head`): nothing more to say.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw error;
});

const code = await runCli(process.argv.slice(2));
process.exitCode = code;
// Roles keep the event loop busy until a signal; one-shot commands end here.
if (!['start', 'serve', 'watch', 'cron', 'demo'].includes(process.argv[2] ?? ''))
  process.exit(code);

/** The upstream stub as its own process (for bench:gateway): prints its URL, runs until killed. */
import { startUpstreamStub } from '../test/support/upstream-stub.js';

const stub = await startUpstreamStub({ apiKey: 'bench-upstream', requestLogLimit: 1 });
process.stdout.write(`${stub.url}\n`);
process.on('SIGTERM', () => void stub.close().then(() => process.exit(0)));

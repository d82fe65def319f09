/** The chart's account codes (they live with the ledger, which both src/ and chain-watchers/ use). */
export { accountCodes as accounts } from '../../ledger/index.js';

import type { TrialBalance } from '../../ledger/index.js';

/** The trial balance in the contract's JSON shape (CLI --json and GET /admin/trial-balance). */
export function trialBalanceJson(trial: TrialBalance) {
  return {
    accounts: trial.accounts.map((a) => ({
      account: a.account,
      currency: a.currency,
      debit: a.debit.toString(),
      credit: a.credit.toString(),
      balance: a.balance.toString(),
    })),
    totals: trial.totals.map((t) => ({
      currency: t.currency,
      debit: t.debit.toString(),
      credit: t.credit.toString(),
      net: t.net.toString(),
    })),
  };
}

/** Account codes of the chart of accounts (architecture.md), built in one place. */
export const accounts = {
  customer: (userId: string) => `liabilities:customers:${userId}`,
  receivable: (userId: string) => `assets:receivables:customers:${userId}`,
  custody: (network: string, asset: string, address: string) =>
    `assets:custody:${network}:${asset}:${address}`,
  trading: (currency: string) => `equity:trading:${currency}`,
  usageRevenue: 'revenue:usage',
  promotions: 'expenses:promotions',
  losses: 'expenses:losses',
  networkFees: (network: string) => `expenses:network-fees:${network}`,
} as const;

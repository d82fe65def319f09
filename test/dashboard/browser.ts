import type { LaunchOptions, Page } from 'playwright-core';

/** Debian's Chromium, headless, quiet: it must not reach for the network on its own. */
export const CHROMIUM_LAUNCH: LaunchOptions = {
  executablePath: process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
};

/** Waits until the element's text is exactly `text`; on timeout says what it was instead. */
export async function waitForText(
  page: Page,
  selector: string,
  text: string,
  timeoutMs = 10_000,
): Promise<void> {
  try {
    await page.waitForFunction(
      ([sel, expected]) => document.querySelector(sel!)?.textContent?.trim() === expected,
      [selector, text] as const,
      { timeout: timeoutMs },
    );
  } catch (error) {
    const actual = await page
      .locator(selector)
      .first()
      .textContent({ timeout: 500 })
      .catch(() => null);
    throw new Error(
      `${selector}: expected text ${JSON.stringify(text)}, found ${JSON.stringify(actual)} (${(error as Error).message.split('\n')[0]})`,
      { cause: error },
    );
  }
}

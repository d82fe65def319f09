import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Abi, Hex } from 'viem';

/**
 * Compiles the test contracts with the `solc` npm package (solc-js) at test time. The output
 * is cached under `data/solc-cache/`, keyed by a hash of the compiler version, the input and
 * every imported file, so reruns skip the compiler (loading solc-js alone takes seconds).
 */

export type ContractName = 'TestToken' | 'MockAggregator' | 'EtherRefuser';

export interface CompiledContract {
  abi: Abi;
  bytecode: Hex;
}

const CONTRACTS_DIR = fileURLToPath(new URL('./contracts/', import.meta.url));
const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CACHE_DIR = path.join(REPO_ROOT, 'data', 'solc-cache');
const SOURCE_FILES: ReadonlyArray<ContractName> = ['TestToken', 'MockAggregator', 'EtherRefuser'];

const require = createRequire(import.meta.url);

let compiled: Promise<Record<ContractName, CompiledContract>> | null = null;

/** ABI and creation bytecode of a test contract (compiled once per process, cached on disk). */
export async function getContract(name: ContractName): Promise<CompiledContract> {
  compiled ??= compileAll();
  return (await compiled)[name];
}

interface StandardJsonOutput {
  errors?: Array<{ severity: string; formattedMessage: string }>;
  contracts?: Record<string, Record<string, { abi: Abi; evm: { bytecode: { object: string } } }>>;
}

async function compileAll(): Promise<Record<ContractName, CompiledContract>> {
  const sources: Record<string, { content: string }> = {};
  for (const name of SOURCE_FILES) {
    sources[`${name}.sol`] = {
      content: await readFile(path.join(CONTRACTS_DIR, `${name}.sol`), 'utf8'),
    };
  }
  const input = {
    language: 'Solidity',
    sources,
    settings: {
      // ganache 7 implements up to Shanghai; newer opcodes (MCOPY, TSTORE) would not run.
      evmVersion: 'shanghai',
      optimizer: { enabled: true, runs: 200 },
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
    },
  };
  const inputJson = JSON.stringify(input);
  const solcVersion = readPackageVersion('solc');
  const key = createHash('sha256')
    .update(solcVersion)
    .update(readPackageVersion('@openzeppelin/contracts'))
    .update(inputJson)
    .digest('hex')
    .slice(0, 32);
  const cacheFile = path.join(CACHE_DIR, `${key}.json`);

  let output: StandardJsonOutput;
  try {
    output = JSON.parse(await readFile(cacheFile, 'utf8')) as StandardJsonOutput;
  } catch {
    output = await runSolc(inputJson);
    await mkdir(CACHE_DIR, { recursive: true });
    // Write then rename: two test workers may compile at once and must not read half a file.
    const temporary = `${cacheFile}.${process.pid}.tmp`;
    await writeFile(temporary, JSON.stringify(output));
    await rename(temporary, cacheFile);
  }

  const result = {} as Record<ContractName, CompiledContract>;
  for (const name of SOURCE_FILES) {
    const contract = output.contracts?.[`${name}.sol`]?.[name];
    if (!contract) throw new Error(`solc produced no contract ${name}`);
    result[name] = { abi: contract.abi, bytecode: `0x${contract.evm.bytecode.object}` };
  }
  return result;
}

async function runSolc(inputJson: string): Promise<StandardJsonOutput> {
  const solc = (await import('solc')).default;
  const findImports = (importPath: string): { contents: string } | { error: string } => {
    try {
      return { contents: readFileSync(require.resolve(importPath), 'utf8') };
    } catch {
      return { error: `not found: ${importPath}` };
    }
  };
  const output = JSON.parse(
    solc.compile(inputJson, { import: findImports }) as string,
  ) as StandardJsonOutput;
  const errors = (output.errors ?? []).filter((error) => error.severity === 'error');
  if (errors.length > 0) {
    throw new Error(`solc failed:\n${errors.map((error) => error.formattedMessage).join('\n')}`);
  }
  return output;
}

function readPackageVersion(name: string): string {
  const manifest = JSON.parse(
    readFileSync(path.join(REPO_ROOT, 'node_modules', name, 'package.json'), 'utf8'),
  ) as { version: string };
  return manifest.version;
}

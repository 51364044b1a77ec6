#!/usr/bin/env node
// Build a TypeScript connector into a Switchboard component.
//
//   node sdk/ts/build.mjs <connector dir> -o <out.wasm>
//
// 1. `jco types` writes the world's TypeScript types (generated/, from wit/);
// 2. `tsc --noEmit` type-checks the connector against them and the SDK;
// 3. rolldown bundles src/index.ts (or the one file in src/) with the SDK
//    into one ES module; the WIT imports stay imports;
// 4. componentize-js makes it a component of the `connector` world.
//
// Every tool comes from node_modules (this directory's, or its parent's in
// a scaffolded connector), installed from a committed package-lock.json by
// `npm ci` (make connectors does it for the repository).

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
// The world: beside this script in a scaffolded connector (switchboard/wit),
// else the repository's.
const wit =
  process.env.SWITCHBOARD_WIT ??
  [join(here, 'wit/switchboard-connector-0.1.0'), resolve(here, '../../wit/switchboard-connector-0.1.0')].find(
    (d) => existsSync(d),
  );
// The toolchain: installed here (sdk/ts in the repository) or in the
// directory above (a scaffolded connector's own package.json).
const modules = [join(here, 'node_modules'), resolve(here, '../node_modules')].find((d) =>
  existsSync(join(d, '.bin', 'tsc')),
);

function usage(message) {
  console.error(`${message}\nusage: node build.mjs <connector dir> -o <out.wasm>`);
  process.exit(2);
}

const args = process.argv.slice(2);
const o = args.indexOf('-o');
if (o === -1 || o + 1 >= args.length) usage('missing -o <out.wasm>');
const out = resolve(args[o + 1]);
const rest = args.filter((_, i) => i !== o && i !== o + 1);
if (rest.length !== 1) usage('name one connector directory');
const dir = resolve(rest[0]);

const src = join(dir, 'src');
const candidates = existsSync(src) ? readdirSync(src).filter((f) => /\.(ts|js)$/.test(f)) : [];
const entryName = candidates.includes('index.ts')
  ? 'index.ts'
  : candidates.length === 1
    ? candidates[0]
    : usage(`${src}: expected index.ts or exactly one .ts file, found ${candidates.join(', ') || 'none'}`);
const entry = join(src, entryName);

if (modules === undefined) {
  console.error(`the TypeScript toolchain is not installed: run \`npm ci\` (in ${resolve(here, '..')} or ${here})`);
  process.exit(1);
}
if (wit === undefined) {
  console.error(`the connector world is missing: expected ${join(here, 'wit')}, or set SWITCHBOARD_WIT`);
  process.exit(1);
}
const bin = (name) => join(modules, '.bin', name);
function run(tool, argv) {
  try {
    execFileSync(bin(tool), argv, { stdio: 'inherit', cwd: dir });
  } catch (e) {
    // The tool has printed why; a stack trace of this script would bury it.
    console.error(`${tool} failed (exit ${e.status ?? e.signal}); no component was written`);
    process.exit(1);
  }
}

const t0 = Date.now();
run('jco', ['types', wit, '--world-name', 'connector', '-o', join(here, 'generated'), '--quiet']);

// Type-check with the SDK's compiler settings, the connector's sources and
// the SDK mapped to its source.
const work = mkdtempSync(join(tmpdir(), 'switchboard-ts-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
{
  const tsconfig = join(work, 'tsconfig.json');
  writeFileSync(
    tsconfig,
    JSON.stringify({
      extends: join(here, 'tsconfig.json'),
      compilerOptions: {
        noEmit: true,
        rootDir: '/',
        baseUrl: here,
        paths: {
          '@switchboard/connector-sdk': [join(here, 'src/index.ts')],
          // `paths` here replaces the SDK's own (the WIT modules): keep them.
          ...JSON.parse(readFileSync(join(here, 'tsconfig.json'), 'utf8')).compilerOptions.paths,
        },
      },
      include: [join(src, '**/*')],
    }),
  );
  run('tsc', ['-p', tsconfig]);

  const { build } = await import(join(modules, 'rolldown/dist/index.mjs'));
  const bundle = join(work, 'connector.js');
  await build({
    input: entry,
    external: [/^wasi:/, /^switchboard:/],
    resolve: { alias: { '@switchboard/connector-sdk': join(here, 'src/index.ts') } },
    logLevel: 'warn',
    output: { file: bundle, format: 'esm' },
  });

  const { componentize } = await import(
    join(modules, '@bytecodealliance/componentize-js/src/componentize.js')
  );
  const { component } = await componentize({
    sourcePath: bundle,
    witPath: wit,
    worldName: 'connector',
  });
  writeFileSync(out, component);
  console.log(
    `built ${out} (${(component.length / 1e6).toFixed(1)} MB) in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
  );
}

// Builds the dashboard into ../static (committed, so installing or running DCNR needs no node):
// dashboard.js (src/main.js with the npm packages it imports, minified), dashboard.js.LEGAL.txt (their
// licence comments), dashboard.css, index.html, and build.json: the sha256 of every source and output and the
// version and lockfile integrity of every npm package inside the bundle (tests/dashboard checks them).
// `node build.mjs --check` builds in memory and fails if ../static differs (the build is deterministic).
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as esbuild from 'esbuild';

const HERE = dirname(fileURLToPath(import.meta.url));
const STATIC = join(HERE, '..', 'static');
const check = process.argv.includes('--check');

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');
const sorted = (object) => Object.fromEntries(Object.entries(object).sort(([a], [b]) => (a < b ? -1 : 1)));

function filesUnder(directory) {
  return readdirSync(directory, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name));
}

async function bundle(entry, outfile, options = {}) {
  const result = await esbuild.build({
    entryPoints: [join(HERE, entry)],
    outfile: join(STATIC, outfile),
    bundle: true,
    minify: true,
    write: false,
    metafile: true,
    legalComments: 'linked',
    charset: 'utf8',
    logLevel: 'warning',
    absWorkingDir: HERE,
    ...options,
  });
  return result;
}

// the npm packages whose files went into the bundle: name -> version and integrity (from the lockfile)
function packagesIn(metafile) {
  const lock = JSON.parse(readFileSync(join(HERE, 'package-lock.json'), 'utf8'));
  const found = {};
  for (const input of Object.keys(metafile.inputs)) {
    const match = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (!match) continue;
    const name = match[1];
    const installed = JSON.parse(readFileSync(join(HERE, 'node_modules', name, 'package.json'), 'utf8'));
    const locked = lock.packages[`node_modules/${name}`];
    if (!locked || locked.version !== installed.version) {
      throw new Error(`node_modules/${name} is ${installed.version}, the lockfile says ${locked?.version}: run npm ci`);
    }
    found[name] = { version: installed.version, integrity: locked.integrity, license: installed.license };
  }
  return sorted(found);
}

async function main() {
  const js = await bundle('src/main.js', 'dashboard.js', { format: 'esm', target: ['es2022'] });
  const css = await bundle('src/style.css', 'dashboard.css');
  const outputs = new Map(); // file name in ../static -> bytes
  for (const file of [...js.outputFiles, ...css.outputFiles]) outputs.set(relative(STATIC, file.path), file.contents);
  outputs.set('index.html', readFileSync(join(HERE, 'src', 'index.html')));

  const sources = {};
  for (const path of [...filesUnder(join(HERE, 'src')), join(HERE, 'package.json'), join(HERE, 'package-lock.json'),
    join(HERE, 'build.mjs')]) {
    sources[relative(HERE, path).split('\\').join('/')] = sha256(readFileSync(path));
  }
  const manifest = {
    about: 'written by dcnr/dashboard/web/build.mjs (make dashboard); do not edit',
    esbuild: esbuild.version,
    packages: packagesIn(js.metafile),
    sources: sorted(sources),
    outputs: sorted(Object.fromEntries([...outputs].map(([name, bytes]) => [name, sha256(bytes)]))),
  };
  outputs.set('build.json', Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`));

  if (check) {
    const stale = [];
    const present = new Set(filesUnder(STATIC).map((path) => relative(STATIC, path)));
    for (const [name, bytes] of outputs) {
      let before = null;
      try {
        before = readFileSync(join(STATIC, name));
      } catch {
        before = null;
      }
      if (before === null || !before.equals(Buffer.from(bytes))) stale.push(name);
      present.delete(name);
    }
    stale.push(...[...present].map((name) => `${name} (not built)`));
    if (stale.length) {
      console.error(`dcnr/dashboard/static differs from a fresh build: ${stale.join(', ')} (run make dashboard)`);
      process.exit(1);
    }
    console.log('dcnr/dashboard/static matches a fresh build');
    return;
  }
  for (const name of filesUnder(STATIC).map((path) => relative(STATIC, path))) {
    if (!outputs.has(name)) throw new Error(`${join(STATIC, name)} is not built by this script: remove it`);
  }
  for (const [name, bytes] of outputs) {
    writeFileSync(join(STATIC, name), bytes);
    console.log(`${join('dcnr/dashboard/static', name)}  ${bytes.length} bytes`);
  }
}

await main();

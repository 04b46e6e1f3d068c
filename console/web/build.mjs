// Builds the console: esbuild bundles src/main.jsx with code splitting (each page and the Agora
// Web SDK are separate chunks loaded on demand) into ../static/console/, then writes .br and .gz
// copies next to each file so the hub serves them precompressed. Run by `make console`.
import { build } from 'esbuild';
import { brotliCompressSync, gzipSync, constants } from 'node:zlib';
import { readdirSync, readFileSync, writeFileSync, rmSync, statSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', 'static', 'console');
rmSync(out, { recursive: true, force: true });

await build({
  entryPoints: { app: join(here, 'src', 'main.jsx') },
  bundle: true,
  splitting: true,
  format: 'esm',
  outdir: out,
  entryNames: '[name]',
  chunkNames: 'chunks/[name]-[hash]',
  assetNames: 'chunks/[name]-[hash]',
  minify: true,
  sourcemap: false,
  target: ['es2020'],
  jsx: 'automatic',
  loader: { '.js': 'jsx' },
  define: { 'process.env.NODE_ENV': '"production"' },
  legalComments: 'none',
  logLevel: 'warning',
});

let raw = 0;
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) { walk(p); continue; }
    const body = readFileSync(p);
    raw += body.length;
    writeFileSync(p + '.gz', gzipSync(body, { level: 9 }));
    writeFileSync(p + '.br', brotliCompressSync(body, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }));
  }
}
walk(out);
console.log(`console built into console/static/console (${(raw / 1024).toFixed(0)} KiB before compression)`);

// Drops the `name` and `producers` custom sections from a wasm file, byte for byte, without
// re-encoding anything else (a wasm-opt round trip can re-encode newer features that workerd
// then refuses). Usage: node scripts/strip-wasm.mjs FILE
import { readFileSync, writeFileSync } from 'node:fs';

const file = process.argv[2];
const bytes = readFileSync(file);
const kept = [bytes.subarray(0, 8)];
let i = 8;
const leb = () => {
  let result = 0, shift = 0, byte;
  do { byte = bytes[i++]; result += (byte & 0x7f) * 2 ** shift; shift += 7; } while (byte & 0x80);
  return result;
};
while (i < bytes.length) {
  const start = i;
  const id = bytes[i++];
  const size = leb();
  const body = i;
  let drop = false;
  if (id === 0) {
    const nameLength = leb();
    const name = bytes.subarray(i, i + nameLength).toString('utf8');
    drop = name === 'name' || name === 'producers';
  }
  if (!drop) kept.push(bytes.subarray(start, body + size));
  i = body + size;
}
writeFileSync(file, Buffer.concat(kept));

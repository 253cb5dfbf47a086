// SHA-256 (FIPS 180-4) of short byte strings, synchronously. The inventory hashes one short
// text per row: Web Crypto's `digest` is a promise per call and costs far more per row than
// the hash itself (a second per 20,000 rows), this costs microseconds.

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const INITIAL = new Uint32Array([
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
]);
const W = new Uint32Array(64);
const H = new Uint32Array(8);
let padded = new Uint8Array(128);
const encoder = new TextEncoder();

/**
 * SHA-256 of `bytes` (of `bytes[start:end]`).
 * @param {Uint8Array} bytes @param {number} [start] @param {number} [end]
 * @returns {Uint32Array} the digest as eight big-endian words; the same array on every call
 */
export function sha256(bytes, start = 0, end = bytes.length) {
  const length = end - start;
  if (padded.length < length + 72) padded = new Uint8Array(length + 72);
  if (length > 64) padded.set(bytes.subarray(start, end));
  else for (let i = 0; i < length; i++) padded[i] = bytes[start + i];
  return digestPadded(length);
}

/**
 * SHA-256 of a text's UTF-8 bytes.
 * @param {string} text
 * @returns {Uint32Array} as `sha256`
 */
export function sha256Text(text) {
  const most = text.length * 3;
  if (padded.length < most + 72) padded = new Uint8Array(most + 72);
  return digestPadded(encoder.encodeInto(text, padded).written);
}

/**
 * Pad the message in `padded` (its first `length` bytes) and hash it.
 * @param {number} length
 */
function digestPadded(length) {
  const total = (length + 72) & ~63; // the message, 0x80, zeros, the 64-bit length in bits
  padded[length] = 0x80;
  padded.fill(0, length + 1, total);
  const bits = length * 8;
  padded[total - 5] = Math.floor(bits / 2 ** 32) & 0xff;
  padded[total - 4] = (bits >>> 24) & 0xff;
  padded[total - 3] = (bits >>> 16) & 0xff;
  padded[total - 2] = (bits >>> 8) & 0xff;
  padded[total - 1] = bits & 0xff;
  H.set(INITIAL);
  for (let block = 0; block < total; block += 64) {
    for (let i = 0; i < 16; i++) {
      const j = block + i * 4;
      W[i] = (padded[j] << 24) | (padded[j + 1] << 16) | (padded[j + 2] << 8) | padded[j + 3];
    }
    for (let i = 16; i < 64; i++) {
      const x = W[i - 15];
      const y = W[i - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      W[i] = W[i - 16] + s0 + W[i - 7] + s1;
    }
    let a = H[0], b = H[1], c = H[2], d = H[3], e = H[4], f = H[5], g = H[6], h = H[7];
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      h = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    H[0] += a;
    H[1] += b;
    H[2] += c;
    H[3] += d;
    H[4] += e;
    H[5] += f;
    H[6] += g;
    H[7] += h;
  }
  return H;
}


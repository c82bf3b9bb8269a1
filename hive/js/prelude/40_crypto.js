// crypto: getRandomValues and randomUUID (WASI random_get), and the part of crypto.subtle functions
// use most: digest (SHA-1/256/384/512) and HMAC keys (importKey, exportKey, generateKey, sign, verify).
// The hashes are C (hcrypto.c).

const HASH_IDS = { "SHA-1": 0, "SHA-256": 1, "SHA-384": 2, "SHA-512": 3 };
const HASH_BLOCK_BITS = { "SHA-1": 512, "SHA-256": 512, "SHA-384": 1024, "SHA-512": 1024 };
const JWK_HMAC = { "SHA-1": "HS1", "SHA-256": "HS256", "SHA-384": "HS384", "SHA-512": "HS512" };
const kKey = Symbol("key");

function notSupported(what) {
  return new DOMException(`${what} is not supported by Edge Hive's crypto.subtle (it has digest and HMAC)`, "NotSupportedError");
}

function algorithmOf(alg) {
  if (typeof alg === "string") return { name: alg };
  if (alg !== null && typeof alg === "object" && typeof alg.name === "string") return alg;
  throw new TypeError("the algorithm must be a name or an object with a name");
}

function hashName(alg) {
  const name = algorithmOf(alg).name.toUpperCase();
  if (!(name in HASH_IDS)) throw notSupported(`the hash ${JSON.stringify(algorithmOf(alg).name)}`);
  return name;
}

function requireHmac(alg) {
  const name = algorithmOf(alg).name;
  if (name.toUpperCase() !== "HMAC") throw notSupported(`the algorithm ${JSON.stringify(name)}`);
}

class CryptoKey {
  constructor(key) {
    if (key !== kInternal) throw new TypeError("Illegal constructor");
  }
  get type() { return "secret"; }
  get extractable() { return this[kKey].extractable; }
  get algorithm() { return this[kKey].algorithm; }
  get usages() { return this[kKey].usages.slice(); }
  [customInspect](show) {
    return `CryptoKey ${show({ type: "secret", extractable: this.extractable, algorithm: this.algorithm, usages: this.usages })}`;
  }
}

function makeHmacKey(raw, hash, length, extractable, usages) {
  const allowed = ["sign", "verify"];
  usages = [...usages].map(String);
  for (const u of usages) {
    if (!allowed.includes(u)) throw new DOMException(`an HMAC key cannot be used to ${u}`, "SyntaxError");
  }
  if (usages.length === 0) throw new DOMException("an HMAC key needs at least one usage (sign or verify)", "SyntaxError");
  const key = new CryptoKey(kInternal);
  Object.defineProperty(key, kKey, {
    value: { raw, extractable: !!extractable, usages, algorithm: { name: "HMAC", hash: { name: hash }, length } },
  });
  return key;
}

function keyFor(key, usage) {
  if (!(key instanceof CryptoKey)) throw new TypeError("the key must be a CryptoKey");
  const k = key[kKey];
  if (!k.usages.includes(usage)) throw new DOMException(`the key's usages do not include ${usage}`, "InvalidAccessError");
  return k;
}

const subtle = {
  async digest(algorithm, data) {
    const name = hashName(algorithm);
    return native.digest(HASH_IDS[name], toU8(data));
  },
  async importKey(format, keyData, algorithm, extractable, usages) {
    const alg = algorithmOf(algorithm);
    requireHmac(alg);
    if (alg.hash === undefined) throw new TypeError("HMAC importKey needs algorithm.hash (for example \"SHA-256\")");
    const hash = hashName(alg.hash);
    let raw;
    if (format === "raw") {
      raw = copyU8(keyData, "the key data");
    } else if (format === "jwk") {
      if (keyData?.kty !== "oct" || typeof keyData.k !== "string") throw new DOMException("an HMAC JWK needs kty \"oct\" and k", "DataError");
      raw = base64urlDecode(keyData.k);
      if (raw === null) throw new DOMException("the JWK's k is not base64url", "DataError");
      if (keyData.alg !== undefined && keyData.alg !== JWK_HMAC[hash]) {
        throw new DOMException(`the JWK's alg ${keyData.alg} does not match ${JWK_HMAC[hash]}`, "DataError");
      }
    } else {
      throw notSupported(`the key format ${JSON.stringify(format)} for HMAC`);
    }
    if (raw.length === 0) throw new DOMException("an HMAC key cannot be empty", "DataError");
    let length = raw.length * 8;
    if (alg.length !== undefined) {
      length = Number(alg.length);
      if (!(length > raw.length * 8 - 8 && length <= raw.length * 8)) throw new DOMException("the key length does not match the key data", "DataError");
    }
    return makeHmacKey(raw, hash, length, extractable, usages);
  },
  async exportKey(format, key) {
    if (!(key instanceof CryptoKey)) throw new TypeError("the key must be a CryptoKey");
    const k = key[kKey];
    if (!k.extractable) throw new DOMException("the key is not extractable", "InvalidAccessError");
    if (format === "raw") return k.raw.slice().buffer;
    if (format === "jwk") {
      return { kty: "oct", k: base64urlEncode(k.raw), alg: JWK_HMAC[k.algorithm.hash.name], key_ops: k.usages.slice(), ext: true };
    }
    throw notSupported(`the key format ${JSON.stringify(format)} for HMAC`);
  },
  async generateKey(algorithm, extractable, usages) {
    const alg = algorithmOf(algorithm);
    requireHmac(alg);
    if (alg.hash === undefined) throw new TypeError("HMAC generateKey needs algorithm.hash");
    const hash = hashName(alg.hash);
    const length = alg.length === undefined ? HASH_BLOCK_BITS[hash] : Number(alg.length);
    if (!(length > 0)) throw new DOMException("the key length must be positive", "OperationError");
    const raw = new Uint8Array(Math.ceil(length / 8));
    native.random(raw);
    return makeHmacKey(raw, hash, length, extractable, usages);
  },
  async sign(algorithm, key, data) {
    requireHmac(algorithm);
    const k = keyFor(key, "sign");
    return native.hmac(HASH_IDS[k.algorithm.hash.name], k.raw, toU8(data));
  },
  async verify(algorithm, key, signature, data) {
    requireHmac(algorithm);
    const k = keyFor(key, "verify");
    const mac = new Uint8Array(native.hmac(HASH_IDS[k.algorithm.hash.name], k.raw, toU8(data)));
    const sig = toU8(signature);
    if (sig.length !== mac.length) return false;
    let diff = 0;
    for (let i = 0; i < mac.length; i++) diff |= mac[i] ^ sig[i];
    return diff === 0;
  },
};
for (const name of ["encrypt", "decrypt", "deriveBits", "deriveKey", "wrapKey", "unwrapKey"]) {
  subtle[name] = async () => {
    throw notSupported(`crypto.subtle.${name}`);
  };
}

class SubtleCrypto {
  constructor(key) {
    if (key !== kInternal) throw new TypeError("Illegal constructor");
  }
}
Object.setPrototypeOf(subtle, SubtleCrypto.prototype);

const INTEGER_ARRAYS = [Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, BigInt64Array, BigUint64Array];

class Crypto {
  constructor(key) {
    if (key !== kInternal) throw new TypeError("Illegal constructor");
  }
  get subtle() { return subtle; }
  getRandomValues(array) {
    if (!INTEGER_ARRAYS.some((T) => array instanceof T)) {
      throw new DOMException("getRandomValues needs an integer typed array", "TypeMismatchError");
    }
    if (array.byteLength > 65536) {
      throw new DOMException(`getRandomValues: ${array.byteLength} bytes requested, at most 65536 allowed`, "QuotaExceededError");
    }
    native.random(new Uint8Array(array.buffer, array.byteOffset, array.byteLength));
    return array;
  }
  randomUUID() {
    const b = new Uint8Array(16);
    native.random(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
}

defineGlobals({ crypto: new Crypto(kInternal), Crypto, CryptoKey, SubtleCrypto });

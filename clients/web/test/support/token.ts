/** HS256 JWTs for tests, signed with the secret the test servers are started with. */

import { createHmac, randomBytes } from "node:crypto";

/** Passed to every test server as PGPULSE_JWT_SECRET; at least 32 bytes, as the server requires. */
export const TEST_JWT_SECRET = "pgpulse-web-client-tests-hs256-secret-0123456789";

export interface Claims {
  readonly tenant_id: string;
  readonly sub?: string;
  readonly scope?: string;
  readonly topics?: readonly string[];
  /** Seconds from now until expiry; default 3600. Negative mints an expired token. */
  readonly ttlSeconds?: number;
}

export function mintToken(claims: Claims, secret: string = TEST_JWT_SECRET): string {
  const { ttlSeconds = 3600, ...rest } = claims;
  const now = Math.floor(Date.now() / 1000);
  const header = encode({ alg: "HS256", typ: "JWT" });
  const payload = encode({ ...rest, iat: now, exp: now + ttlSeconds });
  const signature = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${signature}`;
}

/** A tenant name no other test run uses, since the database may be shared. */
export function uniqueTenant(label: string): string {
  return `web-${label}-${randomBytes(6).toString("hex")}`;
}

function encode(value: object): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

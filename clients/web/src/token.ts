/** Tokens: a fixed JWT, or a function that returns a current one. */

/** Returns a token; called before every connection and request, so it can hand out a fresh one. */
export type TokenProvider = () => string | Promise<string>;

export type TokenSource = string | TokenProvider;

/** The token to use now; refuses an empty one, which the server would refuse less clearly. */
export async function resolveToken(source: TokenSource): Promise<string> {
  const value: unknown = typeof source === "function" ? await source() : source;
  if (typeof value !== "string" || value === "") {
    throw new TypeError(
      `expected a non-empty token string, got ${typeof value === "string" ? "an empty string" : typeof value}`,
    );
  }
  return value;
}

/** How long before a token's expiry the client replaces it: a minute, or a quarter of its life if shorter. */
export const REFRESH_AHEAD_MS = 60_000;

/** The `exp` claim of a JWT, in milliseconds, read without verifying (only the server can); undefined if absent. */
export function tokenExpiry(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (payload === undefined) return undefined;
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const claims: unknown = JSON.parse(atob(padded));
    const exp = typeof claims === "object" && claims !== null ? (claims as { exp?: unknown }).exp : undefined;
    return typeof exp === "number" && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** Milliseconds from `now` until `token` should be refreshed; undefined for a token without `exp`. */
export function refreshDelay(token: string, now: number = Date.now()): number | undefined {
  const expiry = tokenExpiry(token);
  if (expiry === undefined) return undefined;
  const remaining = Math.max(0, expiry - now);
  return Math.max(0, remaining - Math.min(REFRESH_AHEAD_MS, remaining / 4));
}

/** The token to use now, or undefined when there is none (the page's cookies authenticate instead). */
export async function resolveOptionalToken(source: TokenSource | undefined): Promise<string | undefined> {
  return source === undefined ? undefined : resolveToken(source);
}

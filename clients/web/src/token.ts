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

/** The token to use now, or undefined when there is none (the page's cookies authenticate instead). */
export async function resolveOptionalToken(source: TokenSource | undefined): Promise<string | undefined> {
  return source === undefined ? undefined : resolveToken(source);
}

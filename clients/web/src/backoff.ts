/**
 * Reconnect delays: exponential, capped, with jitter.
 *
 * Jitter matters more than the curve: when a server restarts, every browser
 * it served loses its socket in the same second. Without jitter they all
 * come back in the same second too, and again after each failed try.
 */

export interface BackoffOptions {
  /** Delay before the first retry, in milliseconds. Default 500. */
  readonly initialDelayMs?: number;
  /** Upper bound of any delay, in milliseconds. Default 30000. */
  readonly maxDelayMs?: number;
  /** Growth per failed attempt. Default 2. */
  readonly factor?: number;
  /** Fraction of each delay that is random, 0..1. Default 0.5: a delay lies in [d/2, d]. */
  readonly jitter?: number;
}

const DEFAULT_INITIAL_DELAY_MS = 500;
const DEFAULT_MAX_DELAY_MS = 30_000;
const DEFAULT_FACTOR = 2;
const DEFAULT_JITTER = 0.5;

export class Backoff {
  readonly #initial: number;
  readonly #max: number;
  readonly #factor: number;
  readonly #jitter: number;
  readonly #random: () => number;
  #attempt = 0;

  constructor(options: BackoffOptions = {}, random: () => number = Math.random) {
    this.#initial = positive(options.initialDelayMs, DEFAULT_INITIAL_DELAY_MS);
    this.#max = Math.max(this.#initial, positive(options.maxDelayMs, DEFAULT_MAX_DELAY_MS));
    this.#factor = Math.max(1, options.factor ?? DEFAULT_FACTOR);
    this.#jitter = Math.min(1, Math.max(0, options.jitter ?? DEFAULT_JITTER));
    this.#random = random;
  }

  /** Failed attempts since the last reset. */
  get attempt(): number {
    return this.#attempt;
  }

  /** The delay before the next attempt, in milliseconds; each call counts one attempt. */
  next(): number {
    const ceiling = Math.min(this.#max, this.#initial * this.#factor ** this.#attempt);
    this.#attempt += 1;
    return Math.round(ceiling * (1 - this.#jitter * this.#random()));
  }

  /** Start again from the initial delay, after a connection proved healthy. */
  reset(): void {
    this.#attempt = 0;
  }
}

function positive(value: number | undefined, fallback: number): number {
  return value !== undefined && Number.isFinite(value) && value > 0 ? value : fallback;
}

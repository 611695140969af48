/**
 * A seeded random source (splitmix32 state, xorshift-style output), injected wherever the model makes a
 * choice, so that every run and every failure repeats from its seed.
 */
export interface Rng {
  readonly seed: number;
  /** Uniform 32-bit unsigned integer. */
  nextU32(): number;
  /** Uniform integer in [0, bound). */
  nextInt(bound: number): number;
  /** A child generator with a derived seed (independent sequence). */
  fork(label: number): Rng;
}

export class SeededRng implements Rng {
  private state: number;

  constructor(readonly seed: number) {
    this.state = seed >>> 0;
  }

  nextU32(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }

  nextInt(bound: number): number {
    if (!(bound > 0)) throw new RangeError(`bound must be positive (${bound})`);
    if (bound <= 2 ** 32) return Math.floor((this.nextU32() / 2 ** 32) * bound);
    return Math.floor(((this.nextU32() * 2 ** 21 + (this.nextU32() >>> 11)) / 2 ** 53) * bound);
  }

  fork(label: number): Rng {
    return new SeededRng((Math.imul(this.seed ^ 0x5bd1e995, 0x27d4eb2d) + label) >>> 0);
  }
}

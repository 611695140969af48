/** Simulated time, injected so every run repeats. Nanoseconds since the simulation started. */
export interface Clock {
  now(): number;
  advance(ns: number): void;
}

export class ManualClock implements Clock {
  private t = 0;

  now(): number {
    return this.t;
  }

  advance(ns: number): void {
    if (!(ns >= 0)) throw new RangeError(`time cannot go backwards (${ns})`);
    this.t += ns;
  }
}

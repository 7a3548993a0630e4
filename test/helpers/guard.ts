/**
 * Guards for tests that need something the machine may lack (tfjs gradient registration, Chromium).
 * On a developer's machine such a suite is skipped with the reason in its title; with `CI` set it
 * runs, and its first test fails with the reason, so a correctness check can never vanish from CI.
 */
import { expect, it } from 'vitest';

/** Whether to skip a suite whose prerequisite is missing: never under CI. */
export function skipOutsideCi(missing: boolean): boolean {
  return missing && !process.env.CI;
}

/** The first test of a guarded suite: fails (under CI) when the prerequisite is missing. */
export function requirePrerequisite(present: boolean, what: string): void {
  it(`has ${what}`, () => expect(present, `${what} is missing`).toBe(true));
}

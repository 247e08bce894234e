// Runs f, which must throw a CheckpointMismatchError; returns it for its lists to be checked.
import { expect } from "bun:test";
import { CheckpointMismatchError } from "../../services/lib/checkpoints/model-folder.ts";

export function expectMismatch(f: () => unknown): CheckpointMismatchError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(CheckpointMismatchError);
    return err as CheckpointMismatchError;
  }
  throw new Error("expected a CheckpointMismatchError, got none");
}

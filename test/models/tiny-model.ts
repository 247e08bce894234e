// A 16x16 text-to-image model small enough for unit tests: the shipped architecture's block
// types with channels 16/32/32 and a 32-wide text encoder.
import type { Engine } from "../../gpu-core/index.ts";
import { WordTokenizer } from "../../services/lib/data/tokenizer.ts";
import { EMOJI_SCHEDULER, emojiTextEncoderConfig, emojiUNetConfig } from "../../services/lib/models/presets.ts";
import { TextToImageModel } from "../../services/lib/models/text-to-image.ts";

export function tinyModel(engine: Engine, captions: readonly string[], seed: number): TextToImageModel {
  const tokenizer = WordTokenizer.fromCaptions(captions);
  return TextToImageModel.create(
    engine,
    {
      unet: { ...emojiUNetConfig([16, 32, 32], 32), norm_num_groups: 8, sample_size: 16 },
      textEncoder: emojiTextEncoderConfig(tokenizer.vocabSize, 32),
      scheduler: EMOJI_SCHEDULER,
    },
    tokenizer,
    seed,
  );
}

/** ||mine - ref|| / ||ref||, the error measure of the model and DDPO tests. */
export function relativeError(mine: ArrayLike<number>, ref: ArrayLike<number>): number {
  let d = 0;
  let n = 0;
  for (let i = 0; i < ref.length; i++) {
    d += (mine[i]! - ref[i]!) ** 2;
    n += ref[i]! ** 2;
  }
  return Math.sqrt(d / n);
}

// The CLIP rewards' engine thread: holds each CLIP folder's model (loaded once, on first use) and
// embeds images and prompts, so the Rewarder's event loop (health, other RPCs) and train-local's
// progress stay live while a CLIP runs. Calls are answered one at a time (worker-rpc.ts).
import { serveWorkerHandlers, transferResult } from "../workers/worker-rpc.ts";
import { sharedClip } from "./clip.ts";

const handlers = {
  /** L2-normalised image embeddings [n, P] of RGB uint8 images (n, H, W, 3) through the folder's processor. */
  imageEmbeds(args: { dir: string; images: Uint8Array; height: number; width: number }): Float64Array {
    const embeds = sharedClip(args.dir).embedRgb(args.images, { height: args.height, width: args.width });
    return transferResult(embeds, [embeds.buffer as ArrayBuffer]);
  },

  /** L2-normalised text embeddings [n, P], and how many tokens each text lost to truncation. */
  textEmbeds(args: { dir: string; texts: string[] }): { embeds: Float64Array; dropped: number[]; maxLength: number } {
    const clip = sharedClip(args.dir);
    const tokenizer = clip.textTokenizer;
    const embeds = clip.embedTexts(args.texts);
    const dropped = args.texts.map((t) => tokenizer.droppedTokens(t));
    return transferResult({ embeds, dropped, maxLength: tokenizer.maxLength }, [embeds.buffer as ArrayBuffer]);
  },
};

export type ClipWorkerHandlers = typeof handlers;

serveWorkerHandlers(handlers);

// Rewarder handlers: the reward library behind the ddpo.v1.Rewarder contract. Every request is
// checked before scoring (known reward, one size for the batch, RGB bytes that match it).
import { Rewarder } from "../gen/ddpo/v1/rewarder_pb.ts";
import { bindService, Code, checkedText, ServiceError } from "../lib/grpc/index.ts";
import { listRewards, type RewardFunction, rewardByName } from "../lib/rewards/index.ts";

/** Largest image side accepted, in pixels (the JPEG rewards encode every image). */
const MAX_SIDE = 4096;

export function rewarderService() {
  const cache = new Map<string, RewardFunction>();
  const reward = (name: string): RewardFunction => {
    let fn = cache.get(name);
    if (!fn) {
      try {
        fn = rewardByName(name);
      } catch (e) {
        throw new ServiceError(Code.NOT_FOUND, `unknown reward '${name}': ${(e as Error).message}`);
      }
      cache.set(name, fn);
    }
    return fn;
  };
  return bindService(Rewarder, {
    listRewards: () => ({ rewards: listRewards() }),
    async score(request) {
      if (!request.rewardName) throw new ServiceError(Code.INVALID_ARGUMENT, "reward_name is required");
      checkedText(request.rewardName, "reward_name");
      const fn = reward(request.rewardName);
      const n = request.images.length;
      if (n === 0) throw new ServiceError(Code.INVALID_ARGUMENT, "images is empty; score at least one image");
      // Images may differ in size (the contract): each size is scored as one batch.
      const bySize = new Map<string, number[]>();
      request.images.forEach(({ image }, i) => {
        if (!image) throw new ServiceError(Code.INVALID_ARGUMENT, `images[${i}]: missing`);
        const { width, height } = image;
        if (!(width >= 1 && height >= 1 && width <= MAX_SIDE && height <= MAX_SIDE)) {
          throw new ServiceError(Code.INVALID_ARGUMENT, `images[${i}]: size ${width}x${height} outside 1..${MAX_SIDE}`);
        }
        if (image.rgb.length !== width * height * 3) {
          throw new ServiceError(
            Code.INVALID_ARGUMENT,
            `images[${i}]: ${image.rgb.length} bytes of RGB, expected ${width}x${height}x3 = ${width * height * 3}`,
          );
        }
        const key = `${width}x${height}`;
        bySize.set(key, [...(bySize.get(key) ?? []), i]);
      });
      const scores = new Float64Array(n);
      for (const indices of bySize.values()) {
        const { width, height } = request.images[indices[0]!]!.image!;
        const per = width * height * 3;
        const rgb = new Uint8Array(indices.length * per);
        for (const [k, i] of indices.entries()) rgb.set(request.images[i]!.image!.rgb, k * per);
        const batch = await fn.score(
          rgb,
          { width, height },
          indices.map((i) => request.images[i]!.prompt),
        );
        indices.forEach((i, k) => {
          scores[i] = batch[k]!;
        });
      }
      const bad = scores.findIndex((s) => !Number.isFinite(s));
      if (bad >= 0) throw new ServiceError(Code.INTERNAL, `reward ${fn.name} gave a non-finite score for image ${bad}`);
      return { rewardName: fn.name, scores: Array.from(scores) };
    },
  });
}

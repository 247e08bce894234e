// A reward server written independently of this project's code: it knows the ddpo.v1.Rewarder
// contract only from proto/ddpo/v1/rewarder.proto, loaded at run time with @grpc/proto-loader, and
// serves it with plain @grpc/grpc-js (no generated types, nothing from services/ or gpu-core). It
// stands for a reward model someone else wrote, in any language, that a run plugs in by endpoint.
//
//   node test/services/independent-rewarder/server.mjs [host:port]     (default 127.0.0.1:0)
//
// Prints one JSON line {"service":"independent-rewarder","address":"host:port","pid":N} once
// listening; stops on SIGTERM/SIGINT.
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const PROTO_ROOT = fileURLToPath(new URL("../../../proto", import.meta.url));

const definition = protoLoader.loadSync("ddpo/v1/rewarder.proto", {
  includeDirs: [PROTO_ROOT],
  // Field names as the .proto spells them (reward_name, rgb): no generated-code conventions.
  keepCase: true,
  defaults: true,
});
const rewarder = grpc.loadPackageDefinition(definition).ddpo.v1.Rewarder;

// Every score is in [0, 1]; higher is better.
const REWARDS = {
  // Mean of the blue channel over all pixels, divided by 255.
  mean_blue: {
    description: "mean blue channel / 255, in [0, 1]",
    score(rgb, width, height) {
      let sum = 0;
      for (let p = 2; p < rgb.length; p += 3) sum += rgb[p];
      return sum / (width * height * 255);
    },
  },
  // Fraction of horizontally or vertically adjacent pixel pairs whose luma differs by more than
  // 32 (of 255): busy, detailed images score high, flat ones low.
  edge_density: {
    description: "fraction of adjacent pixel pairs with a luma step > 32/255, in [0, 1]",
    score(rgb, width, height) {
      const luma = new Float64Array(width * height);
      for (let i = 0; i < luma.length; i++) {
        luma[i] = 0.299 * rgb[3 * i] + 0.587 * rgb[3 * i + 1] + 0.114 * rgb[3 * i + 2];
      }
      let edges = 0;
      let pairs = 0;
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const i = y * width + x;
          if (x + 1 < width) {
            pairs++;
            if (Math.abs(luma[i] - luma[i + 1]) > 32) edges++;
          }
          if (y + 1 < height) {
            pairs++;
            if (Math.abs(luma[i] - luma[i + width]) > 32) edges++;
          }
        }
      }
      return pairs ? edges / pairs : 0;
    },
  },
};

function fail(callback, code, details) {
  callback({ code, details });
}

const handlers = {
  ListRewards(_call, callback) {
    callback(null, {
      rewards: Object.entries(REWARDS).map(([name, r]) => ({ name, description: r.description })),
    });
  },
  Score(call, callback) {
    const { reward_name, images } = call.request;
    const reward = REWARDS[reward_name];
    if (!reward) {
      fail(callback, grpc.status.NOT_FOUND, `unknown reward '${reward_name}'; known: ${Object.keys(REWARDS)}`);
      return;
    }
    const scores = [];
    for (const [i, scored] of images.entries()) {
      const image = scored.image;
      const width = image?.width ?? 0;
      const height = image?.height ?? 0;
      if (!(width > 0 && height > 0) || image.rgb.length !== width * height * 3) {
        fail(
          callback,
          grpc.status.INVALID_ARGUMENT,
          `images[${i}]: ${width}x${height} with ${image?.rgb.length ?? 0} bytes of RGB (need width*height*3)`,
        );
        return;
      }
      scores.push(reward.score(image.rgb, width, height));
    }
    callback(null, { reward_name, scores });
  },
};

const address = process.argv[2] ?? "127.0.0.1:0";
const server = new grpc.Server({ "grpc.max_receive_message_length": 64 * 2 ** 20 });
server.addService(rewarder.service, handlers);
server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(`independent-rewarder: cannot listen on ${address}: ${err.message}`);
    process.exit(1);
  }
  const host = address.slice(0, address.lastIndexOf(":"));
  console.log(JSON.stringify({ service: "independent-rewarder", address: `${host}:${port}`, pid: process.pid }));
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => server.tryShutdown(() => process.exit(0)));
}

// grpc-js accepts 4 MiB messages by default: too small for a Score request over a batch of
// 512x512 RGB images (768 KiB each) or one latent-model trajectory with its latents (a
// [51, 4, 64, 64] float32 tensor is 3.2 MiB). 64 MiB still bounds what one call can make a process
// buffer. Servers and clients share the default so neither rejects what the other sends.
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

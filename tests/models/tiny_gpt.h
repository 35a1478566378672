// The tiny GPT the model tests train: 4 heads of width 8, sequences of 8,
// micro-batches of 2, and by default an odd vocabulary (97) that tensor
// parallelism must pad.
#ifndef TRIREME_TESTS_MODELS_TINY_GPT_H_
#define TRIREME_TESTS_MODELS_TINY_GPT_H_

#include <cstdlib>

#include "models/gpt.h"
#include "runtime/core/device.h"

namespace trireme::testing {

// The device the model tests run on: $TRIREME_TEST_DEVICE (cpu, cpu_async),
// cpu by default. The BUILD file runs each model test on both.
inline Device TestDevice() {
  const char* d = std::getenv("TRIREME_TEST_DEVICE");
#ifdef TRIREME_TEST_CUDA
  if (d == nullptr || *d == '\0') return Device::Cuda(0);  // a GPU test's default
#endif
  if (d == nullptr || *d == '\0') return Device::Cpu();
  absl::StatusOr<Device> parsed = ParseDevice(d);
  return parsed.ok() ? *parsed : Device::Cpu();
}

inline GptConfig TinyGpt(int layers = 4, int64_t vocab = 97) {
  GptConfig c;
  c.layers = layers;
  c.hidden = 32;
  c.heads = 4;
  c.vocab = vocab;
  c.seq = 8;
  c.micro_batch = 2;
  return c;
}

// The same sizes with the Llama architecture: RMSNorm, rotary positions,
// SwiGLU (width 48), `kv_heads` key/value heads, an optional sliding window,
// an untied head and no biases.
inline GptConfig TinyLlama(int kv_heads, int64_t window = 0, int layers = 4, int64_t vocab = 97) {
  GptConfig c = TinyGpt(layers, vocab);
  UseLlamaArchitecture(&c, kv_heads);
  c.ffn = 48;
  c.sliding_window = window;
  return c;
}

}  // namespace trireme::testing

#endif  // TRIREME_TESTS_MODELS_TINY_GPT_H_

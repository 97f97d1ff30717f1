#pragma once

// A hash that is stable across runs, builds and platforms, for the simulated
// cluster's seeded draws. std::hash and absl::Hash are deliberately not used:
// both may change between runs (absl::Hash is salted per process).

#include <cstdint>

#include "absl/strings/string_view.h"

namespace reflexion::sim {

// splitmix64's finaliser: a bijective mix with good avalanche.
constexpr uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// FNV-1a over length-prefixed fields, seeded, finished with SplitMix64.
// Length prefixes make ("ab", "c") and ("a", "bc") hash differently.
// Usage: StableHash(seed).Add("outcome").Add(key).Unit().
class StableHash {
 public:
  explicit StableHash(uint64_t seed) : h_(kOffset ^ SplitMix64(seed)) {}

  StableHash& Add(uint64_t v) {
    for (int i = 0; i < 8; ++i) Byte(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
  StableHash& Add(absl::string_view s) {
    Add(static_cast<uint64_t>(s.size()));
    for (char c : s) Byte(static_cast<uint8_t>(c));
    return *this;
  }

  // The 64-bit hash.
  uint64_t Finish() const { return SplitMix64(h_); }
  // A draw in [0, 1) with 53 bits of precision.
  double Unit() const {
    return static_cast<double>(Finish() >> 11) * 0x1.0p-53;
  }

 private:
  static constexpr uint64_t kOffset = 0xcbf29ce484222325ULL;
  static constexpr uint64_t kPrime = 0x100000001b3ULL;

  void Byte(uint8_t b) {
    h_ ^= b;
    h_ *= kPrime;
  }

  uint64_t h_;
};

}  // namespace reflexion::sim

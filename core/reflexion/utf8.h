#pragma once

// UTF-8 hygiene: every string we store, send or log must be valid UTF-8
// (proto3 `string` fields are; the C++ parser refuses a message that breaks
// this, so a checkpoint holding one half of a character becomes undecodable).
//
// All functions are pure: thread-safe, no state, no allocation beyond their
// results. None of them fails on any input bytes; "invalid" inputs are data.
// Validity is strict (RFC 3629): no overlong forms, no surrogates
// (U+D800..U+DFFF), nothing above U+10FFFF. NUL is valid UTF-8.

#include <cstddef>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace reflexion::core {

// Whether `s` is valid UTF-8.
bool IsValidUtf8(absl::string_view s);

// The longest prefix of `s` of at most `max_bytes` bytes that does not end
// inside a multi-byte character: for valid `s` the result is valid. For
// invalid `s` the result never ends with an incomplete sequence (a lead byte
// without all its continuation bytes); earlier invalid bytes stay. The
// result views `s`. Callers that mark the clip append their marker after it.
absl::string_view ClipUtf8(absl::string_view s, size_t max_bytes);

// `s` with each maximal invalid subsequence (the Unicode "maximal subpart"
// practice, as in WHATWG and ICU) replaced by U+FFFD. Valid input is returned
// unchanged.
std::string ToValidUtf8(absl::string_view s);

// ToValidUtf8(s) clipped with ClipUtf8 to at most `max_bytes`: untrusted
// bytes made fit to echo in a message or a log line.
std::string ToValidUtf8Clipped(absl::string_view s, size_t max_bytes);

// Replaces every string field (not `bytes`) of `*m` holding invalid UTF-8
// with ToValidUtf8 of it, recursively: singular, repeated, oneof members,
// map keys and values, nested messages. Unknown fields are left alone.
// Returns how many strings were repaired; when `paths` is not null, appends
// the path of each one, built from proto field names:
//   "incident.events[3].message", "analysis.features[\"k\"]" (a map value),
//   "analysis.features[\"k\"].key" (a map key, shown repaired and escaped).
// Map entries whose repaired keys collide keep the last one. Cost when all
// strings are valid: one reflection walk, no allocation (bench/utf8_bench).
int RepairUtf8(google::protobuf::Message* m,
               std::vector<std::string>* paths = nullptr);

// The path (as RepairUtf8 names it) of the first string field of `m` that
// holds invalid UTF-8, or "" when all are valid. For validators.
std::string FindInvalidUtf8(const google::protobuf::Message& m);

// Walks `wire`, the serialized bytes of a message of type `d` (typically
// bytes the protobuf parser refused), and returns `prefix` + the path of the
// first string field holding invalid UTF-8, e.g. "incident.pod_name" or
// "incident.events[2].message" (the index counts that field's occurrences
// on the wire; map entries are "features[1].key" / "features[1].value").
// Returns "" when none is found before the end or before the first
// malformed byte (then the bytes are malformed for another reason).
// Safe on arbitrary bytes: bounds-checked, nesting limited to 64 levels
// (deeper messages are not inspected). Skips groups, unknown fields, packed
// and scalar fields and `bytes` fields.
std::string FindInvalidUtf8InWire(const google::protobuf::Descriptor* d,
                                  absl::string_view wire,
                                  absl::string_view prefix = "");

// Parses `wire` into `*m` (cleared first). When the normal parse fails
// because string fields hold invalid UTF-8, rewrites the wire with
// ToValidUtf8 applied to those strings (recursively, length prefixes
// recomputed), parses that, appends each repaired path (as
// FindInvalidUtf8InWire names them) to `repaired_paths` (may be null) and
// returns true. Returns false, with `*m` unspecified, when the bytes are
// malformed otherwise (truncated, bad tags, nesting beyond 64 levels with
// invalid strings below). For reading data written by older builds: the
// caller logs the repaired paths and goes on.
bool ParseRepairingUtf8(google::protobuf::Message* m, absl::string_view wire,
                        std::vector<std::string>* repaired_paths);

}  // namespace reflexion::core

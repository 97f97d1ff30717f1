#include "core/reflexion/utf8.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace reflexion::core {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD
constexpr int kMaxWireDepth = 64;

// Decodes one character at p[0..n), n >= 1. Returns true and sets *len to its
// length when it is valid; otherwise false and *len to the length of the
// maximal subpart (the longest prefix of a valid sequence, at least 1), which
// is what one U+FFFD replaces. Table 3-7 of the Unicode standard.
bool DecodeOne(const unsigned char* p, size_t n, size_t* len) {
  const unsigned char b = p[0];
  if (b < 0x80) {
    *len = 1;
    return true;
  }
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    need = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 3;
    if (b == 0xE0) lo = 0xA0;  // overlong
    if (b == 0xED) hi = 0x9F;  // surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 4;
    if (b == 0xF0) lo = 0x90;  // overlong
    if (b == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    *len = 1;  // continuation byte, C0/C1 (overlong) or F5..FF
    return false;
  }
  for (size_t i = 1; i < need; ++i) {
    const unsigned char c = i < n ? p[i] : 0;
    const bool ok =
        i < n && (i == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF));
    if (!ok) {
      *len = i;
      return false;
    }
  }
  *len = need;
  return true;
}

// ----------------------------------------------------------------- paths

// A field path built lazily: nodes live on the walkers' stacks and are only
// rendered when an invalid string is found, so the valid path allocates
// nothing.
struct PathNode {
  const PathNode* parent = nullptr;
  absl::string_view name;            // proto field name
  int index = -1;                    // repeated index, -1 for none
  const std::string* key = nullptr;  // map key, rendered ["..."]
};

std::string Render(absl::string_view prefix, const PathNode* leaf) {
  std::vector<const PathNode*> nodes;
  for (const PathNode* n = leaf; n != nullptr; n = n->parent) {
    nodes.push_back(n);
  }
  std::string out(prefix);
  bool first = true;
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    const PathNode& n = **it;
    if (!first) out.push_back('.');
    first = false;
    absl::StrAppend(&out, n.name);
    if (n.index >= 0) absl::StrAppend(&out, "[", n.index, "]");
    if (n.key != nullptr) {
      absl::StrAppend(&out, "[\"", absl::Utf8SafeCEscape(ToValidUtf8(*n.key)),
                      "\"]");
    }
  }
  return out;
}

// ------------------------------------------------------------ reflection

// Walks the string fields of a message with reflection. In find mode
// (`repair_` false) it stops at the first invalid string; in repair mode it
// fixes every one, descending mutably only into sub-messages that hold one.
class MessageWalker {
 public:
  MessageWalker(bool repair, std::vector<std::string>* paths)
      : repair_(repair), paths_(paths) {}

  // `mut` is null (find mode) or the same object as `m`. Returns false to
  // stop the walk (find mode found one).
  bool Walk(const Message& m, Message* mut, const PathNode* parent) {
    const Reflection* r = m.GetReflection();
    std::vector<const FieldDescriptor*> fields;
    r->ListFields(m, &fields);
    for (const FieldDescriptor* f : fields) {
      if (f->is_map()) {
        if (!WalkMap(m, mut, f, parent)) return false;
      } else if (f->type() == FieldDescriptor::TYPE_STRING) {
        if (!WalkString(m, mut, f, parent)) return false;
      } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        if (!WalkMessages(m, mut, f, parent)) return false;
      }
    }
    return true;
  }

  int count() const { return count_; }
  const std::string& first() const { return first_; }

 private:
  // Records an invalid string at `node`; returns false to stop (find mode).
  bool Found(const PathNode& node) {
    ++count_;
    if (!repair_) {
      first_ = Render("", &node);
      return false;
    }
    if (paths_ != nullptr) paths_->push_back(Render("", &node));
    return true;
  }

  bool WalkString(const Message& m, Message* mut, const FieldDescriptor* f,
                  const PathNode* parent) {
    const Reflection* r = m.GetReflection();
    std::string scratch;
    if (!f->is_repeated()) {
      const std::string& v = r->GetStringReference(m, f, &scratch);
      if (IsValidUtf8(v)) return true;
      PathNode node{parent, f->name()};
      if (!Found(node)) return false;
      if (mut != nullptr) r->SetString(mut, f, ToValidUtf8(v));
      return true;
    }
    const int n = r->FieldSize(m, f);
    for (int i = 0; i < n; ++i) {
      const std::string& v = r->GetRepeatedStringReference(m, f, i, &scratch);
      if (IsValidUtf8(v)) continue;
      PathNode node{parent, f->name(), i};
      if (!Found(node)) return false;
      if (mut != nullptr) r->SetRepeatedString(mut, f, i, ToValidUtf8(v));
    }
    return true;
  }

  // Walks one sub-message: const first; mutably again only when repairing
  // and it holds an invalid string.
  bool WalkSub(const Message& sub, absl::FunctionRef<Message*()> get_mut,
               const PathNode& node) {
    if (!repair_) return Walk(sub, nullptr, &node);
    MessageWalker probe(false, nullptr);
    if (probe.Walk(sub, nullptr, &node)) return true;  // all valid
    Message* msub = get_mut();
    return Walk(*msub, msub, &node);
  }

  bool WalkMessages(const Message& m, Message* mut, const FieldDescriptor* f,
                    const PathNode* parent) {
    const Reflection* r = m.GetReflection();
    if (!f->is_repeated()) {
      PathNode node{parent, f->name()};
      return WalkSub(
          r->GetMessage(m, f), [&] { return r->MutableMessage(mut, f); }, node);
    }
    const int n = r->FieldSize(m, f);
    for (int i = 0; i < n; ++i) {
      PathNode node{parent, f->name(), i};
      if (!WalkSub(
              r->GetRepeatedMessage(m, f, i),
              [&] { return r->MutableRepeatedMessage(mut, f, i); }, node)) {
        return false;
      }
    }
    return true;
  }

  // Map entries are read through the repeated-message view; an entry is
  // touched mutably (which makes the map rebuild itself) only when it holds
  // an invalid string.
  bool WalkMap(const Message& m, Message* mut, const FieldDescriptor* f,
               const PathNode* parent) {
    const Reflection* r = m.GetReflection();
    const Descriptor* entry_type = f->message_type();
    const FieldDescriptor* kf = entry_type->map_key();
    const FieldDescriptor* vf = entry_type->map_value();
    const bool string_key = kf->type() == FieldDescriptor::TYPE_STRING;
    const bool string_value = vf->type() == FieldDescriptor::TYPE_STRING;
    const bool message_value =
        vf->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE;
    if (!string_key && !string_value && !message_value) return true;
    const int n = r->FieldSize(m, f);
    for (int i = 0; i < n; ++i) {
      const Message& entry = r->GetRepeatedMessage(m, f, i);
      const Reflection* er = entry.GetReflection();
      std::string key_scratch, value_scratch;
      static const std::string kEmpty;
      const std::string& key =
          string_key ? er->GetStringReference(entry, kf, &key_scratch) : kEmpty;
      const bool key_ok = !string_key || IsValidUtf8(key);
      bool value_ok = true;
      if (string_value) {
        value_ok =
            IsValidUtf8(er->GetStringReference(entry, vf, &value_scratch));
      } else if (message_value) {
        MessageWalker probe(false, nullptr);
        value_ok = probe.Walk(er->GetMessage(entry, vf), nullptr, nullptr);
      }
      if (key_ok && value_ok) continue;
      // Non-string keys render as their index.
      const std::string key_copy = string_key ? key : std::string();
      PathNode entry_node{parent, f->name(), string_key ? -1 : i,
                          string_key ? &key_copy : nullptr};
      Message* mentry = (repair_ && mut != nullptr)
                            ? r->MutableRepeatedMessage(mut, f, i)
                            : nullptr;
      if (!value_ok) {
        if (string_value) {
          if (!Found(entry_node)) return false;
          if (mentry != nullptr) {
            const Reflection* mr = mentry->GetReflection();
            mr->SetString(mentry, vf,
                          ToValidUtf8(mr->GetStringReference(*mentry, vf,
                                                             &value_scratch)));
          }
        } else {
          Message* mval =
              mentry != nullptr
                  ? mentry->GetReflection()->MutableMessage(mentry, vf)
                  : nullptr;
          const Message& val =
              mval != nullptr ? *mval
                              : entry.GetReflection()->GetMessage(entry, vf);
          if (!Walk(val, mval, &entry_node)) return false;
        }
      }
      if (!key_ok) {
        PathNode key_node{&entry_node, "key"};
        if (!Found(key_node)) return false;
        if (mentry != nullptr) {
          mentry->GetReflection()->SetString(mentry, kf, ToValidUtf8(key_copy));
        }
      }
    }
    return true;
  }

  const bool repair_;
  std::vector<std::string>* paths_;
  int count_ = 0;
  std::string first_;
};

// ------------------------------------------------------------------ wire

enum class WireResult { kOk, kFound, kMalformed };

bool ReadVarint(absl::string_view& in, uint64_t* v) {
  uint64_t result = 0;
  for (int i = 0; i < 10; ++i) {
    if (in.empty()) return false;
    const uint8_t b = static_cast<uint8_t>(in.front());
    in.remove_prefix(1);
    result |= static_cast<uint64_t>(b & 0x7F) << (7 * i);
    if ((b & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;  // more than 10 bytes
}

void WriteVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool Skip(absl::string_view& in, size_t n) {
  if (in.size() < n) return false;
  in.remove_prefix(n);
  return true;
}

// Skips the rest of group `number` (its start tag already read), nested
// groups included, iteratively: nesting costs no stack.
bool SkipGroup(absl::string_view& in, uint32_t number) {
  std::vector<uint32_t> open = {number};
  while (!open.empty()) {
    uint64_t tag;
    if (!ReadVarint(in, &tag) || tag > UINT32_MAX || (tag >> 3) == 0) {
      return false;
    }
    const uint32_t field = static_cast<uint32_t>(tag >> 3);
    uint64_t len;
    switch (tag & 7) {
      case 0:
        if (!ReadVarint(in, &len)) return false;
        break;
      case 1:
        if (!Skip(in, 8)) return false;
        break;
      case 2:
        if (!ReadVarint(in, &len) || len > in.size()) return false;
        in.remove_prefix(len);
        break;
      case 3:
        if (open.size() >= 1024) return false;
        open.push_back(field);
        break;
      case 4:
        if (open.back() != field) return false;
        open.pop_back();
        break;
      case 5:
        if (!Skip(in, 4)) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}

// Walks the wire of one message of type `d`. Find mode (`out` null) stops at
// the first invalid string; rewrite mode copies the wire to `*out` with
// every invalid string (at depth <= kMaxWireDepth) replaced by ToValidUtf8.
class WireWalker {
 public:
  explicit WireWalker(absl::string_view prefix) : prefix_(prefix) {}

  WireResult Walk(const Descriptor* d, absl::string_view in, int depth,
                  const PathNode* parent, std::string* out) {
    absl::flat_hash_map<uint32_t, int> occurrences;
    while (!in.empty()) {
      const char* field_start = in.data();
      uint64_t tag;
      if (!ReadVarint(in, &tag) || tag > UINT32_MAX || (tag >> 3) == 0) {
        return WireResult::kMalformed;
      }
      const size_t tag_bytes = in.data() - field_start;
      const uint32_t number = static_cast<uint32_t>(tag >> 3);
      uint64_t value;
      switch (tag & 7) {
        case 0:
          if (!ReadVarint(in, &value)) return WireResult::kMalformed;
          break;
        case 1:
          if (!Skip(in, 8)) return WireResult::kMalformed;
          break;
        case 5:
          if (!Skip(in, 4)) return WireResult::kMalformed;
          break;
        case 3:
          if (!SkipGroup(in, number)) return WireResult::kMalformed;
          break;
        case 2: {
          uint64_t len;
          if (!ReadVarint(in, &len) || len > in.size()) {
            return WireResult::kMalformed;
          }
          absl::string_view payload = in.substr(0, len);
          in.remove_prefix(len);
          const FieldDescriptor* f = d->FindFieldByNumber(number);
          if (f == nullptr) break;  // unknown: copied as is
          const bool is_string = f->type() == FieldDescriptor::TYPE_STRING;
          const bool is_message = f->type() == FieldDescriptor::TYPE_MESSAGE;
          if (!is_string && !is_message) break;  // bytes, packed, mismatch
          PathNode node{parent, f->name(),
                        f->is_repeated() ? occurrences[number]++ : -1};
          if (is_string) {
            if (IsValidUtf8(payload)) break;
            if (out == nullptr) {
              first_ = Render(prefix_, &node);
              return WireResult::kFound;
            }
            paths_.push_back(Render(prefix_, &node));
            const std::string fixed = ToValidUtf8(payload);
            out->append(field_start, tag_bytes);
            WriteVarint(fixed.size(), out);
            out->append(fixed);
            continue;
          }
          if (depth + 1 > kMaxWireDepth) break;  // not inspected
          if (out == nullptr) {
            WireResult r =
                Walk(f->message_type(), payload, depth + 1, &node, nullptr);
            if (r != WireResult::kOk) return r;
            break;
          }
          std::string sub;
          const size_t repaired_before = paths_.size();
          WireResult r =
              Walk(f->message_type(), payload, depth + 1, &node, &sub);
          if (r != WireResult::kOk) return r;
          if (paths_.size() == repaired_before) break;  // unchanged: as is
          out->append(field_start, tag_bytes);
          WriteVarint(sub.size(), out);
          out->append(sub);
          continue;
        }
        default:  // 4 (an end-group outside a group), 6, 7
          return WireResult::kMalformed;
      }
      if (out != nullptr) out->append(field_start, in.data() - field_start);
    }
    return WireResult::kOk;
  }

  const std::string& first() const { return first_; }
  // Rewrite mode: the paths of the strings repaired so far.
  std::vector<std::string>& paths() { return paths_; }

 private:
  absl::string_view prefix_;
  std::vector<std::string> paths_;
  std::string first_;
};

}  // namespace

bool IsValidUtf8(absl::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  while (n > 0) {
    // ASCII fast path, 8 bytes at a time.
    if (n >= 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      if ((w & 0x8080808080808080ULL) == 0) {
        p += 8;
        n -= 8;
        continue;
      }
    }
    size_t len;
    if (!DecodeOne(p, n, &len)) return false;
    p += len;
    n -= len;
  }
  return true;
}

absl::string_view ClipUtf8(absl::string_view s, size_t max_bytes) {
  size_t cut = std::min(s.size(), max_bytes);
  // Drop a trailing lead byte that lacks continuation bytes: look back over
  // at most 3 continuation bytes for it.
  for (size_t back = 1; back <= 3 && back <= cut; ++back) {
    const unsigned char b = static_cast<unsigned char>(s[cut - back]);
    if ((b & 0xC0) == 0x80) continue;  // a continuation byte
    if (b >= 0xC2 && b <= 0xF4) {      // a lead byte (C0, C1, F5+ never are)
      const size_t need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
      if (need > back) cut -= back;
    }
    break;
  }
  return s.substr(0, cut);
}

std::string ToValidUtf8(absl::string_view s) {
  if (IsValidUtf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  while (n > 0) {
    size_t len;
    if (DecodeOne(p, n, &len)) {
      out.append(reinterpret_cast<const char*>(p), len);
    } else {
      out.append(kReplacement);
    }
    p += len;
    n -= len;
  }
  return out;
}

std::string ToValidUtf8Clipped(absl::string_view s, size_t max_bytes) {
  // Clip first (cheap, bounds the work), then repair, then clip again: a
  // replacement character is 3 bytes where the invalid byte was 1.
  std::string out = ToValidUtf8(ClipUtf8(s, max_bytes));
  out.resize(ClipUtf8(out, max_bytes).size());
  return out;
}

int RepairUtf8(Message* m, std::vector<std::string>* paths) {
  MessageWalker walker(true, paths);
  walker.Walk(*m, m, nullptr);
  return walker.count();
}

std::string FindInvalidUtf8(const Message& m) {
  MessageWalker walker(false, nullptr);
  walker.Walk(m, nullptr, nullptr);
  return walker.first();
}

std::string FindInvalidUtf8InWire(const Descriptor* d, absl::string_view wire,
                                  absl::string_view prefix) {
  if (d == nullptr) return "";
  WireWalker walker(prefix);
  if (walker.Walk(d, wire, 0, nullptr, nullptr) != WireResult::kFound) {
    return "";
  }
  return walker.first();
}

bool ParseRepairingUtf8(Message* m, absl::string_view wire,
                        std::vector<std::string>* repaired_paths) {
  if (wire.size() > static_cast<size_t>(INT_MAX)) return false;
  if (m->ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    return true;
  }
  std::string fixed;
  WireWalker walker("");
  if (walker.Walk(m->GetDescriptor(), wire, 0, nullptr, &fixed) !=
          WireResult::kOk ||
      walker.paths().empty()) {
    return false;  // malformed for another reason
  }
  if (!m->ParseFromString(fixed)) return false;
  if (repaired_paths != nullptr) {
    for (std::string& p : walker.paths()) {
      repaired_paths->push_back(std::move(p));
    }
  }
  return true;
}

}  // namespace reflexion::core

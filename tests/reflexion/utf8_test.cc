// Unit tests of core/reflexion/utf8: validation, clipping, replacement,
// reflection repair and the wire walker.

#include "core/reflexion/utf8.h"

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "reflexion/v1/reflexion.pb.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;
using ::testing::UnorderedElementsAre;

constexpr char k2[] = "\xC3\xA9";          // é U+00E9
constexpr char k3[] = "\xE2\x82\xAC";      // € U+20AC
constexpr char k4[] = "\xF0\x9F\x98\x80";  // 😀 U+1F600
constexpr char kFffd[] = "\xEF\xBF\xBD";   // U+FFFD
constexpr char kBad[] = "ok\xC3";          // truncated 2-byte character

// ------------------------------------------------------------- IsValidUtf8

TEST(IsValidUtf8Test, AcceptsAsciiMultiByteEmptyAndNul) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii that is longer than eight bytes"));
  EXPECT_TRUE(IsValidUtf8(absl::StrCat(k2, k3, k4, "abcdefghij", k4)));
  EXPECT_TRUE(IsValidUtf8(std::string("a\0b", 3)));
  EXPECT_TRUE(IsValidUtf8("\x7F"));
  EXPECT_TRUE(IsValidUtf8("\xC2\x80"));          // U+0080
  EXPECT_TRUE(IsValidUtf8("\xDF\xBF"));          // U+07FF
  EXPECT_TRUE(IsValidUtf8("\xE0\xA0\x80"));      // U+0800
  EXPECT_TRUE(IsValidUtf8("\xED\x9F\xBF"));      // U+D7FF
  EXPECT_TRUE(IsValidUtf8("\xEE\x80\x80"));      // U+E000
  EXPECT_TRUE(IsValidUtf8("\xEF\xBF\xBF"));      // U+FFFF
  EXPECT_TRUE(IsValidUtf8("\xF0\x90\x80\x80"));  // U+10000
  EXPECT_TRUE(IsValidUtf8("\xF4\x8F\xBF\xBF"));  // U+10FFFF
}

TEST(IsValidUtf8Test, RejectsOverlongsSurrogatesOutOfRangeAndStrayBytes) {
  for (const char* bad : {
           "\x80",              // stray continuation
           "\xBF",              // stray continuation
           "\xC0\xAF",          // overlong '/'
           "\xC1\xBF",          // overlong
           "\xE0\x80\xAF",      // overlong
           "\xE0\x9F\xBF",      // overlong U+07FF
           "\xF0\x80\x80\xAF",  // overlong
           "\xF0\x8F\xBF\xBF",  // overlong U+FFFF
           "\xED\xA0\x80",      // U+D800 surrogate
           "\xED\xBF\xBF",      // U+DFFF surrogate
           "\xF4\x90\x80\x80",  // U+110000
           "\xF5\x80\x80\x80",  // beyond
           "\xF8\x88\x80\x80\x80",
           "\xFE",
           "\xFF",
           "\xC3",          // truncated
           "\xE2\x82",      // truncated
           "\xF0\x9F\x98",  // truncated
           "\xC3\x28",      // bad continuation
           "\xE2\x28\xA1",
       }) {
    EXPECT_FALSE(IsValidUtf8(bad)) << absl::CHexEscape(bad);
    // Also after an ASCII run taking the 8-byte fast path.
    EXPECT_FALSE(IsValidUtf8(absl::StrCat("0123456789abcdef", bad)));
  }
}

// ---------------------------------------------------------------- ClipUtf8

TEST(ClipUtf8Test, ReturnsShortInputWhole) {
  EXPECT_EQ(ClipUtf8("", 0), "");
  EXPECT_EQ(ClipUtf8("", 10), "");
  EXPECT_EQ(ClipUtf8("abc", 3), "abc");
  EXPECT_EQ(ClipUtf8(absl::StrCat("a", k4), 5), absl::StrCat("a", k4));
}

TEST(ClipUtf8Test, NeverSplitsATwoThreeOrFourByteCharacter) {
  for (const char* ch : {k2, k3, k4}) {
    const size_t len = std::strlen(ch);
    for (size_t pad = 0; pad < 6; ++pad) {
      const std::string s = absl::StrCat(std::string(pad, 'a'), ch, "zz");
      for (size_t max = 0; max <= s.size() + 1; ++max) {
        absl::string_view clipped = ClipUtf8(s, max);
        EXPECT_TRUE(IsValidUtf8(clipped))
            << absl::CHexEscape(s) << " at " << max;
        EXPECT_LE(clipped.size(), max);
        // The longest such prefix: cut only inside the character.
        size_t expect = max;
        if (max > pad && max < pad + len) expect = pad;
        if (max > s.size()) expect = s.size();
        EXPECT_EQ(clipped.size(), expect) << absl::CHexEscape(s) << " " << max;
        EXPECT_EQ(clipped.data(), s.data());
      }
    }
  }
}

TEST(ClipUtf8Test, IssueCase239AsThenEAcuteClipsAt239) {
  const std::string s = absl::StrCat(std::string(239, 'a'), k2);
  EXPECT_EQ(ClipUtf8(s, 240), std::string(239, 'a'));
  EXPECT_EQ(ClipUtf8(s, 241), s);
}

TEST(ClipUtf8Test, InvalidInputNeverEndsInAnIncompleteSequence) {
  // Already truncated at the end, within the limit.
  EXPECT_EQ(ClipUtf8("ab\xE2\x82", 10), "ab");
  EXPECT_EQ(ClipUtf8("ab\xF0\x9F\x98", 10), "ab");
  // Invalid bytes before the clip stay (the caller repairs those).
  EXPECT_EQ(ClipUtf8("\x80\x80xyz", 3), "\x80\x80x");
  EXPECT_EQ(ClipUtf8("a\xFF\xFF", 3), "a\xFF\xFF");
  // A lead byte at the end.
  EXPECT_EQ(ClipUtf8("abc\xC3", 4), "abc");
  // Random bytes: the clip never ends with a lead byte lacking continuations.
  std::mt19937 rng(42);
  for (int i = 0; i < 2000; ++i) {
    std::string s(rng() % 12, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    absl::string_view clipped = ClipUtf8(s, rng() % 14);
    EXPECT_TRUE(IsValidUtf8(ClipUtf8(ToValidUtf8(s), clipped.size())));
    // Appending valid text can never complete a partial sequence.
    if (IsValidUtf8(s)) {
      EXPECT_TRUE(IsValidUtf8(clipped));
    }
  }
}

// ------------------------------------------------------------- ToValidUtf8

TEST(ToValidUtf8Test, KeepsValidInput) {
  const std::string s = absl::StrCat("a", k2, k3, k4, std::string("\0", 1));
  EXPECT_EQ(ToValidUtf8(s), s);
  EXPECT_EQ(ToValidUtf8(""), "");
}

TEST(ToValidUtf8Test, ReplacesEachMaximalSubpartWithOneReplacementChar) {
  const std::string r = kFffd;
  EXPECT_EQ(ToValidUtf8("ok\xC3"), "ok" + r);
  EXPECT_EQ(ToValidUtf8("\xE2\x82x"), r + "x");       // one subpart
  EXPECT_EQ(ToValidUtf8("\xF0\x9F\x98x"), r + "x");   // one subpart
  EXPECT_EQ(ToValidUtf8("\x80\x80"), r + r);          // two stray bytes
  EXPECT_EQ(ToValidUtf8("\xC0\xAF"), r + r);          // overlong: 2
  EXPECT_EQ(ToValidUtf8("\xED\xA0\x80"), r + r + r);  // surrogate: 3
  EXPECT_EQ(ToValidUtf8("\xF4\x90\x80\x80"), r + r + r + r);
  EXPECT_EQ(ToValidUtf8(absl::StrCat(k2, "\xFF", k4)), absl::StrCat(k2, r, k4));
  // The Unicode standard's example (Table 3-8).
  EXPECT_EQ(ToValidUtf8("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64"),
            absl::StrCat("a", r, r, r, "b", r, "c", r, r, "d"));
}

TEST(ToValidUtf8Test, OutputIsAlwaysValid) {
  std::mt19937 rng(7);
  for (int i = 0; i < 5000; ++i) {
    std::string s(rng() % 16, '\0');
    for (char& c : s) c = static_cast<char>(0x80 | rng());  // mostly invalid
    if (!s.empty() && rng() % 2) s[rng() % s.size()] = 'a';
    const std::string fixed = ToValidUtf8(s);
    EXPECT_TRUE(IsValidUtf8(fixed)) << absl::CHexEscape(s);
    EXPECT_EQ(ToValidUtf8(fixed), fixed);
  }
}

// -------------------------------------------------------------- RepairUtf8

v1::WorkflowState ValidState() {
  v1::WorkflowState s;
  s.set_workflow_id("wf-1");
  v1::Incident& in = *s.mutable_incident();
  in.set_pod_name("web-1");
  in.set_namespace_("default");
  in.set_error_type("CrashLoopBackOff");
  in.set_error_message(absl::StrCat("failed ", k2, k3, k4));
  for (int i = 0; i < 4; ++i) {
    v1::PodEvent* e = in.add_events();
    e->set_type("Warning");
    e->set_reason("BackOff");
    e->set_message(absl::StrCat("back-off ", i, " ", k3));
  }
  in.add_container_statuses()->set_name("app");
  v1::Analysis& a = *s.mutable_analysis();
  a.set_signature("CrashLoopBackOff/app_error");
  (*a.mutable_features())["exit_code"] = "1";
  (*a.mutable_features())["termination_reason"] = "Error";
  a.add_evidence("event BackOff: back-off");
  s.add_tried_strategies("rollback_deployment");
  return s;
}

TEST(RepairUtf8Test, AllValidRepairsNothingAndLeavesTheMessageEqual) {
  v1::WorkflowState s = ValidState();
  const std::string before = s.SerializeAsString();
  std::vector<std::string> paths;
  EXPECT_EQ(RepairUtf8(&s, &paths), 0);
  EXPECT_THAT(paths, IsEmpty());
  EXPECT_EQ(s.SerializeAsString(), before);
  EXPECT_EQ(FindInvalidUtf8(s), "");
}

TEST(RepairUtf8Test, RepairsEveryKindOfStringFieldAndNamesItsPath) {
  v1::WorkflowState s = ValidState();
  s.set_workflow_id(kBad);                                     // singular
  s.mutable_incident()->set_pod_name(kBad);                    // nested
  s.mutable_incident()->mutable_events(3)->set_message(kBad);  // repeated msg
  s.mutable_incident()->mutable_container_statuses(0)->set_image(kBad);
  s.add_tried_strategies(kBad);  // repeated string
  (*s.mutable_analysis()->mutable_features())["exit_code"] = kBad;  // map value
  (*s.mutable_analysis()->mutable_features())["bad\xFFkey"] = "v";  // map key
  std::vector<std::string> paths;
  EXPECT_EQ(RepairUtf8(&s, &paths), 7);
  EXPECT_THAT(
      paths,
      UnorderedElementsAre(
          "workflow_id", "incident.pod_name", "incident.events[3].message",
          "incident.container_statuses[0].image", "tried_strategies[1]",
          "analysis.features[\"exit_code\"]",
          absl::StrCat("analysis.features[\"bad", kFffd, "key\"].key")));
  EXPECT_EQ(s.workflow_id(), absl::StrCat("ok", kFffd));
  EXPECT_EQ(s.incident().events(3).message(), absl::StrCat("ok", kFffd));
  EXPECT_EQ(s.incident().events(2).message(), absl::StrCat("back-off 2 ", k3));
  EXPECT_EQ(s.analysis().features().at("exit_code"), absl::StrCat("ok", kFffd));
  EXPECT_EQ(s.analysis().features().at(absl::StrCat("bad", kFffd, "key")), "v");
  EXPECT_EQ(s.analysis().features().at("termination_reason"), "Error");
  EXPECT_EQ(s.analysis().features().size(), 3u);
  EXPECT_EQ(FindInvalidUtf8(s), "");
  v1::WorkflowState back;
  EXPECT_TRUE(back.ParseFromString(s.SerializeAsString()));
  EXPECT_EQ(RepairUtf8(&s), 0);
}

TEST(RepairUtf8Test, RepairsOneofMembersAndMapsOfMessages) {
  v1::WorkflowEvent ev;
  ev.mutable_analysis()->add_evidence(kBad);  // a oneof payload member
  std::vector<std::string> paths;
  EXPECT_EQ(RepairUtf8(&ev, &paths), 1);
  EXPECT_THAT(paths, ElementsAre("analysis.evidence[0]"));

  google::protobuf::Struct st;
  (*st.mutable_fields())["a"].set_string_value(kBad);
  google::protobuf::Struct* inner =
      (*st.mutable_fields())["b"].mutable_struct_value();
  (*inner->mutable_fields())["c"]
      .mutable_list_value()
      ->add_values()
      ->set_string_value(kBad);
  (*st.mutable_fields())["ok"].set_string_value("fine");
  EXPECT_FALSE(FindInvalidUtf8(st).empty());
  paths.clear();
  EXPECT_EQ(RepairUtf8(&st, &paths), 2);
  EXPECT_THAT(paths, UnorderedElementsAre(
                         "fields[\"a\"].string_value",
                         "fields[\"b\"].struct_value.fields[\"c\"].list_value."
                         "values[0].string_value"));
  EXPECT_EQ(st.fields().at("a").string_value(), absl::StrCat("ok", kFffd));
  EXPECT_EQ(st.fields().at("ok").string_value(), "fine");
  EXPECT_EQ(FindInvalidUtf8(st), "");
}

TEST(FindInvalidUtf8Test, NamesTheFirstInvalidField) {
  v1::Incident in = ValidState().incident();
  EXPECT_EQ(FindInvalidUtf8(in), "");
  in.mutable_events(2)->set_reason(kBad);
  EXPECT_EQ(FindInvalidUtf8(in), "events[2].reason");
  in.set_logs(kBad);  // a lower field number comes first
  in.set_namespace_(kBad);
  EXPECT_EQ(FindInvalidUtf8(in), "namespace");
}

// ---------------------------------------------------- FindInvalidUtf8InWire

// Serializes (protobuf writes invalid strings, logging an error; only the
// parser refuses them).
template <typename M>
std::string Wire(const M& m) {
  return m.SerializeAsString();
}

TEST(FindInvalidUtf8InWireTest, FindsAnInvalidStringInEachPosition) {
  const auto* d = v1::ResolveRequest::descriptor();
  struct Case {
    void (*poison)(v1::Incident&);
    const char* path;
  };
  const Case cases[] = {
      {[](v1::Incident& in) { in.set_pod_name(kBad); }, "incident.pod_name"},
      {[](v1::Incident& in) { in.set_namespace_(kBad); }, "incident.namespace"},
      {[](v1::Incident& in) { in.set_logs(kBad); }, "incident.logs"},
      {[](v1::Incident& in) { in.set_request_id(kBad); },
       "incident.request_id"},
      {[](v1::Incident& in) { in.mutable_events(0)->set_type(kBad); },
       "incident.events[0].type"},
      {[](v1::Incident& in) { in.mutable_events(2)->set_message(kBad); },
       "incident.events[2].message"},
      {[](v1::Incident& in) { in.mutable_events(3)->set_reason(kBad); },
       "incident.events[3].reason"},
      {[](v1::Incident& in) {
         in.mutable_container_statuses(0)->set_waiting_message(kBad);
       },
       "incident.container_statuses[0].waiting_message"},
  };
  for (const Case& c : cases) {
    v1::ResolveRequest req;
    *req.mutable_incident() = ValidState().incident();
    c.poison(*req.mutable_incident());
    const std::string wire = Wire(req);
    v1::ResolveRequest parsed;
    ASSERT_FALSE(parsed.ParseFromString(wire)) << c.path;
    EXPECT_EQ(FindInvalidUtf8InWire(d, wire), c.path);
    EXPECT_EQ(FindInvalidUtf8InWire(d, wire, "request."),
              absl::StrCat("request.", c.path));
  }
}

TEST(FindInvalidUtf8InWireTest, NamesMapEntriesByWireIndex) {
  v1::Analysis a;
  (*a.mutable_features())["k"] = kBad;
  EXPECT_EQ(FindInvalidUtf8InWire(v1::Analysis::descriptor(), Wire(a)),
            "features[0].value");
  v1::Analysis b;
  (*b.mutable_features())["\xFF"] = "v";
  EXPECT_EQ(FindInvalidUtf8InWire(v1::Analysis::descriptor(), Wire(b)),
            "features[0].key");
}

TEST(FindInvalidUtf8InWireTest, ValidOrMalformedWireFindsNothing) {
  const auto* d = v1::WorkflowState::descriptor();
  const std::string valid = Wire(ValidState());
  EXPECT_EQ(FindInvalidUtf8InWire(d, valid), "");
  EXPECT_EQ(FindInvalidUtf8InWire(d, ""), "");
  EXPECT_EQ(FindInvalidUtf8InWire(nullptr, valid), "");
  // Every truncation of a wire with an invalid string late in it.
  v1::WorkflowState s = ValidState();
  s.add_tried_strategies(kBad);
  const std::string bad = Wire(s);
  EXPECT_EQ(FindInvalidUtf8InWire(d, bad), "tried_strategies[1]");
  for (size_t n = 0; n < bad.size(); ++n) {
    // Never crashes; may or may not reach the string.
    std::string path = FindInvalidUtf8InWire(d, bad.substr(0, n));
    EXPECT_TRUE(path.empty() || path == "tried_strategies[1]") << path;
  }
  EXPECT_EQ(FindInvalidUtf8InWire(d,
                                  "\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF"
                                  "\xFF"),
            "");
}

TEST(FindInvalidUtf8InWireTest, SkipsGroupsUnknownFieldsPackedAndBytes) {
  const auto* d = v1::Incident::descriptor();
  // Unknown field 99 as a group holding a length-delimited invalid string,
  // then unknown 98 (LEN, invalid), then fixed32/fixed64/varint unknowns,
  // then pod_name (1) invalid.
  std::string wire;
  wire += "\x9B\x06";          // field 99, start group
  wire += "\x0A\x01\xFF";      // field 1 LEN "\xFF" inside the group
  wire += "\xA3\x06\xA4\x06";  // nested group 100 start/end
  wire += "\x9C\x06";          // field 99, end group
  wire += "\x92\x06\x01\xFF";  // field 98 LEN "\xFF" (unknown)
  wire += std::string("\x95\x06\x01\x02\x03\x04", 6);  // 98 fixed32
  wire += std::string("\x91\x06\x01\x02\x03\x04\x05\x06\x07\x08", 10);  // f64
  wire += "\x90\x06\x96\x01";  // 98 varint 150
  // pod_name sent with the wrong wire type (varint): unknown to the parser.
  wire += "\x08\x05";
  EXPECT_EQ(FindInvalidUtf8InWire(d, wire), "");
  wire += "\x0A\x02\xC3\x28";  // pod_name "\xC3("
  EXPECT_EQ(FindInvalidUtf8InWire(d, wire), "pod_name");
  // An unmatched end group is malformed.
  EXPECT_EQ(FindInvalidUtf8InWire(d, std::string("\x9C\x06\x0A\x01\xFF")), "");
  // A group never closed is malformed.
  EXPECT_EQ(FindInvalidUtf8InWire(d, std::string("\x9B\x06\x0A\x01\xFF")), "");
}

TEST(FindInvalidUtf8InWireTest, BoundsRecursionDepth) {
  // Struct -> Value -> Struct ... 200 levels deep, the string at the bottom.
  google::protobuf::Value v;
  v.set_string_value(kBad);
  std::string wire = Wire(v);
  for (int i = 0; i < 100; ++i) {
    google::protobuf::ListValue l;
    *l.add_values() = v;
    google::protobuf::Value next;
    *next.mutable_list_value() = l;
    v = next;
  }
  wire = Wire(v);
  // Beyond 64 levels the string is not inspected.
  EXPECT_EQ(FindInvalidUtf8InWire(google::protobuf::Value::descriptor(), wire),
            "");
  // A 30-level one is found.
  google::protobuf::Value w;
  w.set_string_value(kBad);
  for (int i = 0; i < 15; ++i) {
    google::protobuf::Value next;
    *next.mutable_list_value()->add_values() = w;
    w = next;
  }
  EXPECT_THAT(
      FindInvalidUtf8InWire(google::protobuf::Value::descriptor(), Wire(w)),
      ::testing::EndsWith("values[0].string_value"));
  // Raw bytes nested 3000 Value/ListValue levels deep: no stack overflow.
  std::string deep = "\x1A\x01\xFF";  // Value.string_value = "\xFF"
  auto wrap = [](char tag, const std::string& inner) {
    std::string out(1, tag);
    uint64_t n = inner.size();
    while (n >= 0x80) {
      out.push_back(static_cast<char>((n & 0x7F) | 0x80));
      n >>= 7;
    }
    out.push_back(static_cast<char>(n));
    return out + inner;
  };
  for (int i = 0; i < 1500; ++i) {
    deep = wrap('\x32', wrap('\x0A', deep));  // list_value { values { ... } }
  }
  EXPECT_EQ(FindInvalidUtf8InWire(google::protobuf::Value::descriptor(), deep),
            "");
  google::protobuf::Value parsed;
  EXPECT_FALSE(ParseRepairingUtf8(&parsed, deep, nullptr));
}

TEST(FindInvalidUtf8InWireTest, RandomBytesNeverCrash) {
  std::mt19937 rng(1234);
  const std::string seed = [] {
    v1::WorkflowState s = ValidState();
    s.mutable_incident()->mutable_events(1)->set_message(kBad);
    return Wire(s);
  }();
  for (int i = 0; i < 20000; ++i) {
    std::string s = seed;
    const int flips = 1 + rng() % 4;
    for (int f = 0; f < flips; ++f) {
      s[rng() % s.size()] = static_cast<char>(rng());
    }
    if (rng() % 3 == 0) s.resize(rng() % s.size());
    (void)FindInvalidUtf8InWire(v1::WorkflowState::descriptor(), s);
    v1::WorkflowState m;
    std::vector<std::string> paths;
    if (ParseRepairingUtf8(&m, s, &paths)) {
      EXPECT_EQ(FindInvalidUtf8(m), "");
    }
  }
}

// ------------------------------------------------------ ParseRepairingUtf8

TEST(ParseRepairingUtf8Test, ValidWireParsesWithoutRepairs) {
  const v1::WorkflowState s = ValidState();
  v1::WorkflowState m;
  std::vector<std::string> paths;
  ASSERT_TRUE(ParseRepairingUtf8(&m, Wire(s), &paths));
  EXPECT_THAT(paths, IsEmpty());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(m, s));
}

TEST(ParseRepairingUtf8Test, RepairsOldCheckpointsAndKeepsEverythingElse) {
  v1::WorkflowState s = ValidState();
  s.set_attempt(3);
  s.mutable_analysis()->add_evidence(
      absl::StrCat(std::string(239, 'a'), "\xC3"));  // the old clip bug
  s.mutable_incident()->mutable_events(1)->set_message("\xE2\x82");
  (*s.mutable_analysis()->mutable_features())["x"] = "\xFF";
  const std::string wire = Wire(s);
  v1::WorkflowState plain;
  ASSERT_FALSE(plain.ParseFromString(wire));
  v1::WorkflowState m;
  std::vector<std::string> paths;
  ASSERT_TRUE(ParseRepairingUtf8(&m, wire, &paths));
  // Map entries are numbered in wire order, which protobuf leaves open.
  EXPECT_THAT(paths, UnorderedElementsAre(
                         "incident.events[1].message",
                         MatchesRegex(R"(analysis\.features\[[0-2]\]\.value)"),
                         "analysis.evidence[1]"));
  EXPECT_EQ(m.attempt(), 3);
  EXPECT_EQ(m.analysis().evidence(1),
            absl::StrCat(std::string(239, 'a'), kFffd));
  EXPECT_EQ(m.incident().events(1).message(), kFffd);
  EXPECT_EQ(m.incident().events(0).message(), absl::StrCat("back-off 0 ", k3));
  EXPECT_EQ(m.analysis().features().at("x"), kFffd);
  EXPECT_EQ(m.analysis().features().at("exit_code"), "1");
  // Equal to repairing the in-memory message.
  v1::WorkflowState repaired = s;
  RepairUtf8(&repaired);
  EXPECT_EQ(m.SerializeAsString().size(), repaired.SerializeAsString().size());
  EXPECT_EQ(FindInvalidUtf8(m), "");
}

TEST(ParseRepairingUtf8Test, MalformedWireIsRefused) {
  v1::WorkflowState s = ValidState();
  s.set_workflow_id(kBad);
  std::string wire = Wire(s);
  v1::WorkflowState m;
  EXPECT_FALSE(
      ParseRepairingUtf8(&m, wire.substr(0, wire.size() - 1), nullptr));
  EXPECT_FALSE(ParseRepairingUtf8(&m, "\x0A\x05\x61", nullptr));
  EXPECT_FALSE(ParseRepairingUtf8(&m, "\x07", nullptr));
  EXPECT_TRUE(ParseRepairingUtf8(&m, wire, nullptr));
  EXPECT_EQ(m.workflow_id(), absl::StrCat("ok", kFffd));
}

}  // namespace
}  // namespace reflexion::core

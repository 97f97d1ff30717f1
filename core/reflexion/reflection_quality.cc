#include "core/reflexion/reflection_quality.h"

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "core/reflexion/catalog.h"

namespace reflexion::core {
namespace {

std::string Lower(absl::string_view s) { return absl::AsciiStrToLower(s); }

// Words of `text` (lower case, split on anything but letters, digits, '_'
// and '-').
std::vector<std::string> Terms(absl::string_view text) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : text) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' ||
        c == '-') {
      cur.push_back(absl::ascii_tolower(static_cast<unsigned char>(c)));
    } else if (!cur.empty()) {
      out.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

bool ContainsAny(absl::string_view haystack,
                 std::initializer_list<absl::string_view> needles) {
  for (absl::string_view n : needles) {
    if (absl::StrContains(haystack, n)) return true;
  }
  return false;
}

// Whether `text` names `name` as a word (so "delete_pod" is not found in
// "undelete_pods").
bool NamesWord(absl::string_view text, absl::string_view name) {
  size_t pos = 0;
  auto word = [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_';
  };
  while ((pos = text.find(name, pos)) != absl::string_view::npos) {
    size_t end = pos + name.size();
    if ((pos == 0 || !word(text[pos - 1])) &&
        (end == text.size() || !word(text[end]))) {
      return true;
    }
    pos = end;
  }
  return false;
}

// One fact of the attempt, recognised in any of its spellings.
struct Fact {
  std::vector<std::string> spellings;
};

void AddFact(std::vector<Fact>& facts, std::initializer_list<std::string> s) {
  Fact f;
  for (const std::string& x : s) {
    std::string c = Lower(x);
    if (c.size() >= 3) f.spellings.push_back(std::move(c));
  }
  if (!f.spellings.empty()) facts.push_back(std::move(f));
}

std::string Spaced(absl::string_view s) {
  return absl::StrReplaceAll(s, {{"_", " "}});
}

}  // namespace

ReflectionQuality JudgeReflection(const ReflectionRequest& request,
                                  const v1::Reflection& reflection) {
  // The text only: lessons are memory keys that start with the signature
  // by construction, so they would cite the family and cause for free.
  const std::string text = Lower(reflection.text());
  const v1::Analysis& a = request.analysis;
  const v1::Observation& obs = request.observation;
  const std::string& tried = request.selection.strategy().name();

  // Evidence: distinct facts of this attempt.
  std::vector<Fact> facts;
  AddFact(facts, {a.error_family()});
  AddFact(facts, {a.cause(), Spaced(a.cause())});
  AddFact(facts, {tried, Spaced(tried)});
  if (const ParamSpec* p = ParamOf(request.selection.action().type());
      p != nullptr) {
    const double v = ParamValue(request.selection.strategy().params(), *p);
    AddFact(facts, {p->name});
    AddFact(facts, {absl::StrFormat("x%.2g", v), absl::StrFormat("x%g", v),
                    absl::StrFormat("%.2f", v)});
  }
  for (const auto& [k, v] : a.features()) {
    if (v.size() >= 3 && v != "true" && v != "false") AddFact(facts, {v});
  }
  if (obs.failure_reason() != a.error_family()) {
    AddFact(facts, {obs.failure_reason()});
  }
  // Distinctive words (identifiers, reasons) of the evidence, signals and
  // anomalies: each its own fact.
  std::vector<std::string> words;
  auto collect = [&words](absl::string_view line) {
    for (std::string& t : Terms(line)) {
      if (t.size() >= 8) words.push_back(std::move(t));
    }
  };
  for (int i = 0; i < a.evidence_size() && i < 10; ++i) collect(a.evidence(i));
  for (int i = 0; i < obs.signals_size() && i < 10; ++i)
    collect(obs.signals(i));
  for (int i = 0; i < obs.anomalies_size() && i < 10; ++i) {
    collect(obs.anomalies(i));
  }
  std::sort(words.begin(), words.end());
  words.erase(std::unique(words.begin(), words.end()), words.end());
  for (std::string& w : words) AddFact(facts, {std::move(w)});
  // A spelling shared by two facts (the failure reason is also an evidence
  // word) counts once.
  std::vector<std::string> hit;
  for (const Fact& f : facts) {
    for (const std::string& s : f.spellings) {
      if (!absl::StrContains(text, s)) continue;
      if (std::find(hit.begin(), hit.end(), s) == hit.end()) hit.push_back(s);
      break;
    }
  }
  ReflectionQuality q;
  q.evidence = std::min(1.0, static_cast<double>(hit.size()) / 3.0);

  // A concrete next step.
  bool other_strategy = !RecommendedStrategy(reflection, tried).empty();
  bool names_tried = !tried.empty() && NamesWord(text, Lower(tried));
  bool names_param = false;
  for (const ActionSpec& s : Catalog()) {
    if (s.strategy && tried != s.name && NamesWord(text, s.name)) {
      other_strategy = true;
    }
  }
  for (const ParamSpec& p : ParamSpecs()) {
    if (NamesWord(text, p.name)) names_param = true;
  }
  // After a success, naming what worked is the next step (use it again);
  // after a failure, naming only the strategy that failed is not.
  if (reflection.proposed_changes_size() > 0 || other_strategy || names_param ||
      (obs.success() && names_tried)) {
    q.next_step = 1.0;
  }

  // Agreement with the outcome.
  const bool says_success =
      ContainsAny(text, {"succeeded", "resolved", "recovered", "worked",
                         "fixed the", "became healthy", "is healthy",
                         "stayed healthy", "was successful", " works"});
  const bool says_failure = ContainsAny(
      text, {"failed", "did not", "didn't", "not resolve", "still ",
             "no effect", "unsuccessful", "relapse", "not enough",
             "insufficient", "too small", "does not", "unexplained"});
  q.agreement = 0.5;
  if (obs.success()) {
    if (says_success) q.agreement = 1.0;
    if (says_failure && !says_success) q.agreement = 0.0;
  } else {
    if (says_failure) q.agreement = 1.0;
    if (says_success && !says_failure) q.agreement = 0.0;
  }
  // Agreement scales the rest: a reflection that misreads the outcome is
  // wrong however specific it is.
  q.score = std::clamp(q.agreement * (0.5 * q.evidence + 0.5 * q.next_step),
                       0.0, 1.0);
  return q;
}

std::string RecommendedStrategy(const v1::Reflection& reflection,
                                const std::string& tried) {
  if (const ActionSpec* s = FindActionByName(reflection.recommended_strategy());
      s != nullptr && s->strategy) {
    return s->name;
  }
  const std::string text = Lower(reflection.text());
  size_t best = std::string::npos;
  std::string name;
  for (const char* cue : {"prefer ", "try ", "use ", "recommend ", "next "}) {
    for (size_t at = text.find(cue); at != std::string::npos;
         at = text.find(cue, at + 1)) {
      // A word of its own ("use", not "because").
      if (at > 0 &&
          absl::ascii_isalnum(static_cast<unsigned char>(text[at - 1]))) {
        continue;
      }
      // The first catalog strategy named in the 80 characters after a cue.
      absl::string_view after =
          absl::string_view(text).substr(at, 80 + std::strlen(cue));
      for (const ActionSpec& s : Catalog()) {
        if (!s.strategy || tried == s.name) continue;
        size_t pos = after.find(s.name);
        if (pos == absl::string_view::npos || !NamesWord(after, s.name)) {
          continue;
        }
        if (at + pos < best) {
          best = at + pos;
          name = s.name;
        }
      }
    }
  }
  return name;
}

}  // namespace reflexion::core

#pragma once

// The OpenAI-compatible reflector: chat completions at a base URL (OpenAI,
// vLLM, Ollama, llama.cpp server), structured output, every reply
// validated against its schema and the action catalog. What it sends is
// redacted first, and the pod's own text goes in as quoted data; what it
// gets back can only be words and bounded parameter proposals for catalog
// strategies below tier C — it never chooses an action, changes a tier,
// skips an approval or reaches the executor.

#include <atomic>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/ports/reflector.h"
#include "server/upstream/http_client.h"

namespace reflexion::upstream {

struct OpenAiOptions {
  // Chat completions are POSTed to base_url + "/chat/completions"
  // (openai.base_url, OPENAI_BASE_URL).
  std::string base_url = "https://api.openai.com/v1";
  std::string model = "gpt-4o-mini";  // openai.model
  double temperature = 0.2;           // openai.temperature
  // Completion tokens for a medium reflection; shallow gets half, deep
  // twice (openai.max_tokens).
  int max_tokens = 800;
  // Per attempt (openai.timeout); two attempts at most.
  absl::Duration timeout = absl::Seconds(30);
  // Bearer token (OPENAI_API_KEY or openai.api_key_file); empty: none is
  // sent (a local server). Never logged.
  std::string api_key;
  // Ask for response_format json_schema; a server that refuses it (HTTP
  // 400 naming response_format) is asked for plain JSON from then on.
  bool json_schema = true;
};

// Attempts per call and the longest a call can take (timeouts plus the
// backoff between them): the reflect node's timeout must exceed it.
inline constexpr int kOpenAiAttempts = 2;
absl::Duration OpenAiCallBudget(const OpenAiOptions& options);

class OpenAiReflector final : public core::Reflector {
 public:
  // `http` must outlive this object.
  OpenAiReflector(OpenAiOptions options, HttpClient* http);

  std::string Name() const override { return "openai"; }
  void Reflect(const core::ReflectionRequest& request,
               core::Callback<reflexion::v1::Reflection> done) override;

  // Whether replies are still requested with json_schema.
  bool json_schema() const { return json_schema_.load(); }

 private:
  void Send(const core::ReflectionRequest& request, bool schema,
            core::Callback<reflexion::v1::Reflection> done);

  const OpenAiOptions options_;
  HttpClient* const http_;
  std::atomic<bool> json_schema_;
};

namespace openai {

// The system prompt for `request` (its depth, meta or not), naming the
// catalog strategies and parameters a reply may propose.
std::string SystemPrompt(const core::ReflectionRequest& request);

// The user message: the attempt as JSON, redacted, with the pod's own text
// in the quoted field "pod_data" (clipped by depth).
std::string UserMessage(const core::ReflectionRequest& request);

// The JSON schema a reply must match.
std::string ReplySchema();

// The chat-completions request body.
std::string RequestBody(const OpenAiOptions& options,
                        const core::ReflectionRequest& request, bool schema);

// The reflection in a chat-completions response body: the first choice's
// message content, parsed (in plain mode also from a ```json fence or the
// first {...} in the text) and validated against the schema
// (kInvalidArgument naming what is wrong), then against the catalog:
// proposals for strategies outside it, tier C, parameters that are not the
// strategy's, or non-numbers are dropped (Reflection.dropped says which
// and why); values are clamped to their bounds (noted too). Every string is
// made valid UTF-8, clipped and redacted. The quality is judged from the
// reply (core::JudgeReflection).
absl::StatusOr<reflexion::v1::Reflection> ParseResponse(
    const core::ReflectionRequest& request, const std::string& body);

}  // namespace openai
}  // namespace reflexion::upstream

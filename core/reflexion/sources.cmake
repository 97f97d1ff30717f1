list(APPEND CORE_SOURCES
  reflexion/analyzer.cc
  reflexion/audit_chain.cc
  reflexion/catalog.cc
  reflexion/events.cc
  reflexion/facts.cc
  reflexion/heuristic_reflector.cc
  reflexion/metrics.cc
  reflexion/patterns.cc
  reflexion/policy.cc
  reflexion/reflection_quality.cc
  reflexion/pod_object.cc
  reflexion/redact.cc
  reflexion/regression.cc
  reflexion/selector.cc
  reflexion/utf8.cc
  reflexion/validation.cc
  reflexion/version_judge.cc
  reflexion/workflow.cc
)
# audit_chain.cc: SHA-256 of the audit log's hash chain (libcrypto EVP).
list(APPEND CORE_EXTRA_LIBS OpenSSL::Crypto)

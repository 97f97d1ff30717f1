list(APPEND CORE_SOURCES
  reflexion/analyzer.cc
  reflexion/catalog.cc
  reflexion/events.cc
  reflexion/facts.cc
  reflexion/heuristic_reflector.cc
  reflexion/metrics.cc
  reflexion/pod_object.cc
  reflexion/redact.cc
  reflexion/regression.cc
  reflexion/selector.cc
  reflexion/utf8.cc
  reflexion/validation.cc
  reflexion/workflow.cc
)

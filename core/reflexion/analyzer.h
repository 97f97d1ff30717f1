#pragma once

#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// Turns an incident and the executor's diagnosis into a root-cause
// signature "<family>/<cause>". Pure and deterministic; pod logs are only
// matched against fixed patterns, never interpreted.
//
// Shallow analysis reads termination reasons, exit codes, waiting messages
// and events; deep analysis (deep_analysis node, for unknown error types or
// unclassified causes) also mines the log tail and records more evidence.
reflexion::v1::Analysis Analyze(const reflexion::v1::Incident& incident,
                                const reflexion::v1::Diagnosis& diagnosis,
                                bool deep);

// Whether the analysis needs deep analysis: unknown family or a cause the
// shallow rules could not classify.
bool NeedsDeepAnalysis(const reflexion::v1::Analysis& analysis);

}  // namespace reflexion::core

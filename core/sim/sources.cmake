# core/sim: the simulated cluster. Included by core/CMakeLists.txt, so paths
# are relative to core/ and CMAKE_CURRENT_*_DIR are core's.

# Embed scenarios.yaml as a C++ raw string literal; re-run CMake when it
# changes.
set(_reflexion_sim_yaml ${CMAKE_CURRENT_SOURCE_DIR}/sim/scenarios.yaml)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
  ${_reflexion_sim_yaml})
file(READ ${_reflexion_sim_yaml} REFLEXION_SIM_SCENARIOS_YAML)
string(FIND "${REFLEXION_SIM_SCENARIOS_YAML}" ")sim_yaml" _pos)
if(NOT _pos EQUAL -1)
  message(FATAL_ERROR
    "${_reflexion_sim_yaml} contains the raw-string delimiter "
    "')sim_yaml'")
endif()
configure_file(${CMAKE_CURRENT_SOURCE_DIR}/sim/default_scenarios.cc.in
  ${CMAKE_CURRENT_BINARY_DIR}/sim/default_scenarios.cc @ONLY)

list(APPEND CORE_SOURCES
  sim/scenario.cc
  sim/simulated_cluster.cc
  sim/learning.cc
  ${CMAKE_CURRENT_BINARY_DIR}/sim/default_scenarios.cc
)

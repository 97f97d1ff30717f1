list(APPEND CORE_SOURCES graph/task_runner.cc)

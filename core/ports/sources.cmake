list(APPEND CORE_SOURCES
  ports/in_memory_knowledge_store.cc
)

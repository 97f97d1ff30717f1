list(APPEND CORE_SOURCES
  ports/in_memory_knowledge_store.cc
  ports/checkpoint_store.cc
  ports/in_memory_checkpoint_store.cc
  ports/audit_log.cc
  ports/in_memory_audit_log.cc
)

#ifndef CSQLITE_SHIM_H
#define CSQLITE_SHIM_H

#include <sqlite3.h>

/// sqlite3_config is variadic, which Swift cannot call. Must run before SQLite initializes;
/// returns SQLITE_MISUSE after.
static inline int dtm_sqlite3_disable_memstatus(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

#endif

#include "CSQLite.h"

int mc_sqlite3_bind_blob_transient(sqlite3_stmt *stmt, int index,
                                   const void *data, int len) {
    return sqlite3_bind_blob(stmt, index, data, len, SQLITE_TRANSIENT);
}

int mc_sqlite3_bind_text_transient(sqlite3_stmt *stmt, int index,
                                   const char *text, int len) {
    return sqlite3_bind_text(stmt, index, text, len, SQLITE_TRANSIENT);
}

/* SQLite for Swift. */
#ifndef METACRYPT_CSQLITE_H
#define METACRYPT_CSQLITE_H
#include <sqlite3.h>

/* SQLITE_TRANSIENT is a cast macro Swift cannot import. */
int mc_sqlite3_bind_blob_transient(sqlite3_stmt *stmt, int index,
                                   const void *data, int len);
int mc_sqlite3_bind_text_transient(sqlite3_stmt *stmt, int index,
                                   const char *text, int len);
#endif

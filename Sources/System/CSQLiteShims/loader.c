/* Written by scripts/c-forwarders: SQLite, loaded with dlopen when a process first calls
 * it (lazy_library.h, in CLazyLibrary). Do not edit; run the script again. */
#include "CSQLiteShims.h"
#include <sqlite3.h>

#define LAZY_NAME "SQLite"
#define LAZY_SONAME "libsqlite3.so.0"
#define LAZY_PACKAGE "libsqlite3-0"
#define LAZY_PREFIX sqlite
#define FUNCTIONS(FORWARD, FORWARD_VOID) \
    FORWARD(int, sqlite3_bind_blob, (sqlite3_stmt* a0, int a1, const void* a2, int n, void(*a4)(void*)), (a0, a1, a2, n, a4)) \
    FORWARD(int, sqlite3_bind_double, (sqlite3_stmt* a0, int a1, double a2), (a0, a1, a2)) \
    FORWARD(int, sqlite3_bind_int64, (sqlite3_stmt* a0, int a1, sqlite3_int64 a2), (a0, a1, a2)) \
    FORWARD(int, sqlite3_bind_null, (sqlite3_stmt* a0, int a1), (a0, a1)) \
    FORWARD(int, sqlite3_bind_text, (sqlite3_stmt* a0, int a1, const char* a2, int a3, void(*a4)(void*)), (a0, a1, a2, a3, a4)) \
    FORWARD(int, sqlite3_busy_timeout, (sqlite3* a0, int ms), (a0, ms)) \
    FORWARD(int, sqlite3_clear_bindings, (sqlite3_stmt* a0), (a0)) \
    FORWARD(int, sqlite3_close_v2, (sqlite3* a0), (a0)) \
    FORWARD(const void *, sqlite3_column_blob, (sqlite3_stmt* a0, int iCol), (a0, iCol)) \
    FORWARD(int, sqlite3_column_bytes, (sqlite3_stmt* a0, int iCol), (a0, iCol)) \
    FORWARD(int, sqlite3_column_count, (sqlite3_stmt *pStmt), (pStmt)) \
    FORWARD(double, sqlite3_column_double, (sqlite3_stmt* a0, int iCol), (a0, iCol)) \
    FORWARD(sqlite3_int64, sqlite3_column_int64, (sqlite3_stmt* a0, int iCol), (a0, iCol)) \
    FORWARD(const unsigned char *, sqlite3_column_text, (sqlite3_stmt* a0, int iCol), (a0, iCol)) \
    FORWARD(int, sqlite3_column_type, (sqlite3_stmt* a0, int iCol), (a0, iCol)) \
    FORWARD(const char *, sqlite3_errmsg, (sqlite3* a0), (a0)) \
    FORWARD(int, sqlite3_exec, (sqlite3* a0, const char *sql, int (*callback)(void*,int,char**,char**), void * a3, char **errmsg), (a0, sql, callback, a3, errmsg)) \
    FORWARD(int, sqlite3_finalize, (sqlite3_stmt *pStmt), (pStmt)) \
    FORWARD_VOID(sqlite3_free, (void* a0), (a0)) \
    FORWARD(int, sqlite3_get_autocommit, (sqlite3* a0), (a0)) \
    FORWARD(const char *, sqlite3_libversion, (void), ()) \
    FORWARD(int, sqlite3_open_v2, (const char *filename, sqlite3 **ppDb, int flags, const char *zVfs), (filename, ppDb, flags, zVfs)) \
    FORWARD(int, sqlite3_prepare_v2, (sqlite3 *db, const char *zSql, int nByte, sqlite3_stmt **ppStmt, const char **pzTail), (db, zSql, nByte, ppStmt, pzTail)) \
    FORWARD(int, sqlite3_reset, (sqlite3_stmt *pStmt), (pStmt)) \
    FORWARD(int, sqlite3_step, (sqlite3_stmt* a0), (a0)) \
    FORWARD(sqlite3_int64, sqlite3_total_changes64, (sqlite3* a0), (a0))

#include <lazy_library.h>

package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"

	_ "modernc.org/sqlite" // registers the "sqlite" driver: pure Go, no cgo
)

// The crawl_jobs statements of pytest_quaero/core/store.py (JobStore), character for
// character, so the Go worker and the built-in Python pool write the same rows the same way.
const (
	now = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

	markRunningSQL = "update crawl_jobs set status = 'running', started_at = " + now + ", error = '' " +
		"where id = ? and status not in ('completed', 'failed')"
	childStatusSQL    = "select status from crawl_jobs where id = ?"
	finishChildSQL    = "update crawl_jobs set status = ?, completed_at = " + now + ", error = ? where id = ?"
	parentProgressSQL = "update crawl_jobs set " +
		"completed_urls = completed_urls + ?, failed_urls = failed_urls + ?, " +
		"pending_urls = pending_urls - 1, " +
		"status = case when pending_urls - 1 <= 0 then 'completed' else status end, " +
		"completed_at = case when pending_urls - 1 <= 0 then " + now + " else completed_at end " +
		"where id = ? and pending_urls > 0"
	receivedSQL = "select received from goqite where id = ?"
)

// DSN is the database file as a modernc URI whose _pragma parameters set busy_timeout,
// cache_size, journal_mode and synchronous on every connection the pool opens (they are
// per-connection settings, lost with the connection; SQLite's own synchronous default is
// FULL, the plugin's NORMAL). _txlock makes every BeginTx, goqite's included, a BEGIN
// IMMEDIATE (write lock taken up front, inside the busy handler) or a plain deferred BEGIN.
func DSN(c Config) (string, error) {
	path, err := filepath.Abs(c.DBPath)
	if err != nil {
		return "", err
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", c.BusyTimeoutMS)) // modernc runs it first
	q.Add("_pragma", fmt.Sprintf("cache_size(%d)", -c.CacheSizeMB*1024))
	q.Add("_pragma", fmt.Sprintf("journal_mode(%s)", c.JournalMode))
	q.Add("_pragma", fmt.Sprintf("synchronous(%s)", c.Synchronous))
	q.Set("_txlock", txLock(c))
	q.Set("mode", "rw") // SQLite's own URI key: never create the file, the plugin prepares it
	// file: form, so a path with '?' or '#' survives (escaped here, unescaped by SQLite)
	return "file:" + (&url.URL{Path: filepath.ToSlash(path)}).EscapedPath() + "?" + q.Encode(), nil
}

func txLock(c Config) string {
	if c.BeginImmediate {
		return "immediate"
	}
	return "deferred"
}

// OpenDB is one worker's database handle: ONE connection, opened lazily (Ping opens it), so
// each worker has its own SQLite connection as each built-in worker thread does, and as
// Quaero's unbounded pool gave each busy goroutine. A handle shared by all workers with one
// connection would serialise them in Go and never let SQLite see the contention.
// On PostgreSQL the handle is openPostgres's, limited the same way.
func OpenDB(c Config) (*sql.DB, error) {
	if c.Backend == BackendPostgreSQL {
		return openPostgres(c)
	}
	dsn, err := DSN(c)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return db, nil
}

// ReadPragmas reads back what the connection really runs with.
func ReadPragmas(ctx context.Context, db *sql.DB) (Pragmas, string, error) {
	var p Pragmas
	var version string
	for _, read := range []struct {
		sql  string
		dest any
	}{
		{"pragma journal_mode", &p.JournalMode},
		{"pragma synchronous", &p.Synchronous},
		{"pragma busy_timeout", &p.BusyTimeout},
		{"pragma cache_size", &p.CacheSize},
		{"select sqlite_version()", &version},
	} {
		if err := db.QueryRowContext(ctx, read.sql).Scan(read.dest); err != nil {
			return p, "", fmt.Errorf("%s: %w", read.sql, err)
		}
	}
	return p, version, nil
}

// MarkRunning is JobStore.mark_running: one autocommit statement.
func MarkRunning(ctx context.Context, db *sql.DB, jobID string) error {
	_, err := db.ExecContext(ctx, markRunningSQL, jobID)
	return err
}

// FinishChild is JobStore.finish_child: in one transaction, read the child's status first
// (Quaero's underflow guard), then mark it finished and move the parent's counters. False
// when the child had already finished: a second delivery of a completed job (a duplicate).
// With a deferred BEGIN the first read takes a snapshot the writes must upgrade; that is
// where the "immediate" fix matters.
func FinishChild(ctx context.Context, db *sql.DB, jobID, parentID string, failed bool, errText string) (bool, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op; on error the error that matters is returned
	var status string
	switch err := tx.QueryRowContext(ctx, childStatusSQL, jobID).Scan(&status); {
	case errors.Is(err, sql.ErrNoRows):
		return false, tx.Commit()
	case err != nil:
		return false, err
	case status == "completed" || status == "failed":
		return false, tx.Commit()
	}
	newStatus, completed, failedN := "completed", 1, 0
	if failed {
		newStatus, completed, failedN = "failed", 0, 1
	}
	if r := []rune(errText); len(r) > 500 { // store.py keeps error[:500], in characters
		errText = string(r[:500])
	}
	if _, err := tx.ExecContext(ctx, finishChildSQL, newStatus, errText, jobID); err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, parentProgressSQL, completed, failedN, parentID); err != nil {
		return false, err
	}
	return true, tx.Commit()
}

package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"maragu.dev/goqite"
)

// The crawl_jobs statements of pytest_quaero/core/postgresql/store.py (PgJobStore), character
// for character but for the placeholders: psycopg's %(name)s are pgx's $n here
// (status $1, error $2, job $3, done $4, failed $5, parent $6). store_test.go checks the copy.
const (
	pgMarkRunningSQL = "update crawl_jobs set status = 'running', started_at = now(), error = '' " +
		"where id = $1 and status not in ('completed', 'failed')"
	// The child's guard, its status and its parent's counters in ONE statement, as the plugin's
	// store does: one round trip, and no client time while the parent's row is locked.
	pgFinishSQL = `
with child as (
  update crawl_jobs set status = $1, completed_at = now(), error = $2
  where id = $3 and status not in ('completed', 'failed')
  returning id
), parent as (
  update crawl_jobs set
    completed_urls = completed_urls + $4, failed_urls = failed_urls + $5,
    pending_urls = pending_urls - 1,
    status = case when pending_urls - 1 <= 0 then 'completed' else status end,
    completed_at = case when pending_urls - 1 <= 0 then now() else completed_at end
  where id = $6 and pending_urls > 0 and exists (select 1 from child)
  returning id
)
select count(*) from child`
	pgReceivedSQL = "select received from goqite where id = $1"
	// what pytest_quaero/core/postgresql/connect.py read_session reads; the two timeouts from
	// pg_settings, whose unit for both is the millisecond
	pgSessionSQL = "select current_setting('transaction_isolation'), " +
		"(select setting::int from pg_settings where name = 'lock_timeout'), " +
		"(select setting::int from pg_settings where name = 'statement_timeout'), " +
		"current_setting('synchronous_commit'), current_setting('search_path'), " +
		"current_setting('server_version'), current_setting('max_connections')::int"
)

// pgLockNames are the lock SQLSTATEs of pytest_quaero/core/postgresql/errors.py, named as
// PostgreSQL's errcodes table names them; the plugin files each as "<code> <name>".
var pgLockNames = map[string]string{
	"40001": "serialization_failure",
	"40P01": "deadlock_detected",
	"55P03": "lock_not_available",
	"57014": "query_canceled",
	"53300": "too_many_connections",
}

// PgSession is what a PostgreSQL connection really runs with, read back from the server: the
// keys of the plugin's Session.as_dict, so the hello and the plugin's own session line up.
type PgSession struct {
	Isolation          string `json:"isolation"`
	LockTimeoutMS      int    `json:"lock_timeout_ms"`
	StatementTimeoutMS int    `json:"statement_timeout_ms"`
	SynchronousCommit  string `json:"synchronous_commit"`
	SearchPath         string `json:"search_path"`
	ServerVersion      string `json:"server_version"`
	MaxConnections     int    `json:"max_connections"`
}

// synchronousCommit maps QUAERO_SYNCHRONOUS as the plugin's connect does: OFF and NORMAL may
// lose the last commits in a machine crash (like WAL + NORMAL), FULL and EXTRA may not.
func synchronousCommit(c Config) string {
	if c.Synchronous == "FULL" || c.Synchronous == "EXTRA" {
		return "on"
	}
	return "off"
}

// openPostgres is one worker's handle on the run's DSN through pgx's database/sql driver.
// lock_timeout (the busy timeout's twin: how long a statement waits for another transaction's
// row lock before 55P03) and synchronous_commit are startup parameters, so every connection
// the handle (re)opens has them, as the SQLite DSN's _pragma parameters do. The DSN's own
// options (search_path: the run's schema) and application_name are kept as given.
func openPostgres(c Config) (*sql.DB, error) {
	conf, err := pgx.ParseConfig(c.DBPath)
	if err != nil {
		return nil, fmt.Errorf("QUAERO_DB_PATH is not a PostgreSQL DSN: %w", err)
	}
	conf.RuntimeParams["lock_timeout"] = fmt.Sprintf("%dms", c.BusyTimeoutMS)
	conf.RuntimeParams["synchronous_commit"] = synchronousCommit(c)
	db := stdlib.OpenDB(*conf)
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return db, nil
}

// ReadSession reads back the settings a PostgreSQL connection runs with.
func ReadSession(ctx context.Context, db *sql.DB) (PgSession, error) {
	var s PgSession
	err := db.QueryRowContext(ctx, pgSessionSQL).Scan(&s.Isolation, &s.LockTimeoutMS, &s.StatementTimeoutMS,
		&s.SynchronousCommit, &s.SearchPath, &s.ServerVersion, &s.MaxConnections)
	if err != nil {
		return s, fmt.Errorf("reading the session settings: %w", err)
	}
	s.Isolation = upper(s.Isolation)
	return s, nil
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// pgTableExists looks the table up on the search_path: the run's schema.
func pgTableExists(ctx context.Context, db *sql.DB, name string) bool {
	var found bool
	err := db.QueryRowContext(ctx, "select to_regclass($1) is not null", name).Scan(&found)
	return err == nil && found
}

// MarkRunningPG is PgJobStore.mark_running: one autocommit statement.
func MarkRunningPG(ctx context.Context, db *sql.DB, jobID string) error {
	_, err := db.ExecContext(ctx, pgMarkRunningSQL, jobID)
	return err
}

// FinishChildPG is PgJobStore.finish_child: the child and its parent's counters in one
// statement (its own transaction). False when the child had already finished (a duplicate).
func FinishChildPG(ctx context.Context, db *sql.DB, jobID, parentID string, failed bool, errText string) (bool, error) {
	status, done, failedN := "completed", 1, 0
	if failed {
		status, done, failedN = "failed", 0, 1
	}
	if r := []rune(errText); len(r) > 500 { // store.py keeps error[:500], in characters
		errText = string(r[:500])
	}
	var n int
	if err := db.QueryRowContext(ctx, pgFinishSQL, status, errText, jobID, done, failedN, parentID).Scan(&n); err != nil {
		return false, err
	}
	return n > 0, nil
}

// PgLockState is the SQLSTATE when err is (or wraps) one of the lock errors of a PostgreSQL
// server; told apart by the code, never by the message text.
func PgLockState(err error) (string, bool) {
	var e *pgconn.PgError
	if !errors.As(err, &e) {
		return "", false
	}
	_, ok := pgLockNames[e.Code]
	return e.Code, ok
}

func isPostgreSQLError(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e)
}

// lockKind is a lock error of either backend, as its lock_error event names it.
type lockKind struct {
	name       string // SQLITE_BUSY_SNAPSHOT; 40001 serialization_failure
	resultCode int    // SQLite's extended result code
	sqlstate   string // PostgreSQL's SQLSTATE
}

// classifyLock recognises a lock error of either driver.
func classifyLock(err error) (lockKind, bool) {
	if code, ok := LockCode(err); ok {
		return lockKind{name: CodeName(code), resultCode: code}, true
	}
	if state, ok := PgLockState(err); ok {
		return lockKind{name: state + " " + pgLockNames[state], sqlstate: state}, true
	}
	return lockKind{}, false
}

// redactDSN is the DSN as an error message may show it: where it goes, never its password.
func redactDSN(dsn string) string {
	conf, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "the PostgreSQL DSN in QUAERO_DB_PATH (unparseable)"
	}
	return fmt.Sprintf("postgresql://%s@%s:%d/%s", conf.User, conf.Host, conf.Port, conf.Database)
}

// pgClaimSQL is goqite v0.4.0's PostgreSQL claim (ReceiveTx's statement, its parameters in
// its order: timeout, queue, now, max receive) with the fix goqite PR #72 proposes, as the
// plugin's own queue (pytest_quaero/core/postgresql/queue.py) has it: FOR UPDATE SKIP LOCKED
// in the subquery, so a worker passes over a message another worker is claiming. goqite runs
// its statement under SERIALIZABLE, where two claims at once fail with 40001, and under READ
// COMMITTED the plain subquery would hand one message to both. It also returns received (the
// protocol's delivery number), which goqite's statement does not.
const pgClaimSQL = `
			update goqite
			set
				timeout = $1,
				received = received + 1
			where id = (
				select id from goqite
				where
					queue = $2 and
					$3 >= timeout and
					received < $4
				order by priority desc, created
				limit 1
				for update skip locked
			)
			returning id, body, received`

// ReceivePG claims the next visible message in one autocommit statement (READ COMMITTED
// unless the DSN says otherwise), or returns nil when there is none.
func ReceivePG(ctx context.Context, db *sql.DB, c Config) (*goqite.Message, int, error) {
	now := time.Now().UTC()
	var m goqite.Message
	var received int
	err := db.QueryRowContext(ctx, pgClaimSQL, now.Add(c.VisibilityTimeout), c.Queue, now, c.MaxReceive).
		Scan(&m.ID, &m.Body, &received)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	return &m, received, nil
}

package main

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"
)

// holdWriteLock takes the write lock on another connection (BEGIN IMMEDIATE, busy_timeout 0)
// and returns its release.
func holdWriteLock(t *testing.T, path string) func() {
	t.Helper()
	holder := openTestDB(t, path, 0)
	conn, err := holder.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(t.Context(), "begin immediate"); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			if _, err := conn.ExecContext(context.Background(), "rollback"); err != nil {
				t.Error(err)
			}
			conn.Close()
		}
	}
	t.Cleanup(release)
	return release
}

// workerDB is a worker's own handle (the DSN's pragmas), connected.
func workerDB(t *testing.T, path string, overrides map[string]string) *sql.DB {
	t.Helper()
	db, err := OpenDB(testConfig(t, path, overrides))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Ping(); err != nil {
		t.Fatal(err)
	}
	return db
}

func recordingRetrier(rec *recorder, delays *[]time.Duration) *Retrier {
	return &Retrier{Events: NewEvents(rec, nil), Worker: 2, Sleep: func(_ context.Context, d time.Duration) bool {
		*delays = append(*delays, d)
		return true
	}}
}

func TestLockErrorIsRetriedThenEscapes(t *testing.T) {
	path := newDatabase(t, "WAL")
	db := workerDB(t, path, map[string]string{"QUAERO_BUSY_TIMEOUT_MS": "0"})
	holdWriteLock(t, path)
	rec, delays := &recorder{}, []time.Duration{}
	r := recordingRetrier(rec, &delays)
	err := r.Do(t.Context(), "queue_delete", Policy{Attempts: 3, Backoff: 10 * time.Millisecond}, func(ctx context.Context) error {
		_, err := db.ExecContext(ctx, "delete from goqite where id = 'm_x'")
		return err
	})
	if code, ok := LockCode(err); !ok || code != 5 {
		t.Fatalf("err %v: want the SQLITE_BUSY that escaped", err)
	}
	events := rec.events(t)
	locks := only(events, "lock_error")
	if len(locks) != 3 {
		t.Fatalf("%d lock_error events, want one per attempt: %v", len(locks), events)
	}
	for i, e := range locks {
		want := i < 2
		if e.str("code") != "SQLITE_BUSY" || e.num("result_code") != 5 || e.num("attempt") != float64(i+1) ||
			e["retried"] != want || e.str("operation") != "queue_delete" || e.worker() != 2 {
			t.Errorf("lock_error %d: %v; want SQLITE_BUSY (5), attempt %d, retried %v", i, e, i+1, want)
		}
		if _, ok := e["waited_ms"].(float64); !ok {
			t.Errorf("lock_error %d: no waited_ms", i)
		}
	}
	ops := only(events, "operation")
	if len(ops) != 1 || ops[0].str("outcome") != "exhausted" || ops[0].num("attempts") != 3 {
		t.Errorf("operation events %v, want one exhausted after 3 attempts", ops)
	}
	if len(delays) != 2 || delays[0] != 10*time.Millisecond || delays[1] != 20*time.Millisecond {
		t.Errorf("backoff %v, want 10ms then 20ms (doubling)", delays)
	}
}

func TestLockErrorRetriedUntilTheLockIsFree(t *testing.T) {
	path := newDatabase(t, "WAL")
	db := workerDB(t, path, map[string]string{"QUAERO_BUSY_TIMEOUT_MS": "0"})
	release := holdWriteLock(t, path)
	rec, delays := &recorder{}, []time.Duration{}
	r := recordingRetrier(rec, &delays)
	attempt := 0
	err := r.Do(t.Context(), "save_job", Policy{Attempts: 5, Backoff: time.Millisecond}, func(ctx context.Context) error {
		if attempt++; attempt == 3 {
			release()
		}
		return MarkRunning(ctx, db, "nobody")
	})
	if err != nil {
		t.Fatal(err)
	}
	events := rec.events(t)
	locks := only(events, "lock_error")
	if len(locks) != 2 || locks[0]["retried"] != true || locks[1]["retried"] != true {
		t.Errorf("lock_error events %v, want two, both retried", locks)
	}
	ops := only(events, "operation")
	if len(ops) != 1 || ops[0].str("outcome") != "ok" || ops[0].num("attempts") != 3 {
		t.Errorf("operation events %v, want ok at attempt 3", ops)
	}
}

// With one attempt (retries off) the first lock error escapes: retried false.
func TestOneAttemptMeansNoRetry(t *testing.T) {
	path := newDatabase(t, "WAL")
	db := workerDB(t, path, map[string]string{"QUAERO_BUSY_TIMEOUT_MS": "0"})
	holdWriteLock(t, path)
	rec, delays := &recorder{}, []time.Duration{}
	err := recordingRetrier(rec, &delays).Do(t.Context(), "progress_update", Policy{Attempts: 1, Backoff: time.Second},
		func(ctx context.Context) error {
			_, err := FinishChild(ctx, db, "c", "p", false, "")
			return err
		})
	locks := only(rec.events(t), "lock_error")
	if _, ok := LockCode(err); !ok || len(locks) != 1 || locks[0]["retried"] != false || len(delays) != 0 {
		t.Errorf("err %v, lock_error %v, delays %v: want one escaped lock error, no wait", err, locks, delays)
	}
}

func TestOtherErrorsAreNotRetried(t *testing.T) {
	path := newDatabase(t, "WAL")
	db := workerDB(t, path, nil)
	rec, delays := &recorder{}, []time.Duration{}
	err := recordingRetrier(rec, &delays).Do(t.Context(), "save_job", Policy{Attempts: 5, Backoff: time.Millisecond},
		func(ctx context.Context) error {
			_, err := db.ExecContext(ctx, "update no_such_table set x = 1")
			return err
		})
	if err == nil {
		t.Fatal("want the error")
	}
	if _, ok := LockCode(err); ok {
		t.Fatalf("%v classified as a lock error", err)
	}
	events := rec.events(t)
	ops := only(events, "operation")
	if len(only(events, "lock_error")) != 0 || len(ops) != 1 || ops[0].str("outcome") != "error" || ops[0].num("attempts") != 1 {
		t.Errorf("events %v: want one operation with outcome error after 1 attempt", events)
	}
}

// waited_ms is how long the failed statement ran: SQLite's busy handler waits out busy_timeout.
func TestWaitedMillisecondsIncludeTheBusyTimeout(t *testing.T) {
	path := newDatabase(t, "WAL")
	db := workerDB(t, path, map[string]string{"QUAERO_BUSY_TIMEOUT_MS": "200"})
	holdWriteLock(t, path)
	rec, delays := &recorder{}, []time.Duration{}
	_ = recordingRetrier(rec, &delays).Do(t.Context(), "save_job", Policy{Attempts: 1}, func(ctx context.Context) error {
		return MarkRunning(ctx, db, "x")
	})
	locks := only(rec.events(t), "lock_error")
	if len(locks) != 1 || locks[0].num("waited_ms") < 190 { // the busy handler's sleeps add up to the timeout
		t.Errorf("lock_error %v: want waited_ms >= the 200 ms busy_timeout", locks)
	}
}

// A deferred transaction that read first cannot upgrade once another connection committed:
// SQLITE_BUSY_SNAPSHOT (517), the bug the "immediate" fix removes, named as SQLite names it.
func TestBusySnapshotIsNamed(t *testing.T) {
	path := newDatabase(t, "WAL")
	ids := seed(t, path, "R1", 1, 2)
	db := workerDB(t, path, map[string]string{"QUAERO_BEGIN_IMMEDIATE": "false"})
	other := openTestDB(t, path, 10000)
	tx, err := db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	var status string
	if err := tx.QueryRow(childStatusSQL, ids[0]).Scan(&status); err != nil {
		t.Fatal(err)
	}
	mustExec(t, other, markRunningSQL, ids[1])
	_, err = tx.Exec(finishChildSQL, "completed", "", ids[0])
	code, ok := LockCode(err)
	if !ok || code != 517 || CodeName(code) != "SQLITE_BUSY_SNAPSHOT" {
		t.Fatalf("err %v (code %d): want SQLITE_BUSY_SNAPSHOT", err, code)
	}
}

// SQLITE_LOCKED: a table dropped on the connection that still reads it.
func TestLockedIsNamed(t *testing.T) {
	path := newDatabase(t, "WAL")
	seed(t, path, "R1", 1, 2)
	db := workerDB(t, path, nil)
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rows, err := conn.QueryContext(t.Context(), "select id from crawl_jobs")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	rows.Next()
	_, err = conn.ExecContext(t.Context(), "drop table crawl_jobs")
	code, ok := LockCode(err)
	if !ok || code&0xff != 6 || CodeName(code) != "SQLITE_LOCKED" {
		t.Fatalf("err %v (code %d): want SQLITE_LOCKED", err, code)
	}
}

func TestCodeNames(t *testing.T) {
	for code, want := range map[int]string{
		5: "SQLITE_BUSY", 261: "SQLITE_BUSY_RECOVERY", 517: "SQLITE_BUSY_SNAPSHOT", 773: "SQLITE_BUSY_TIMEOUT",
		6: "SQLITE_LOCKED", 262: "SQLITE_LOCKED_SHAREDCACHE", 1029: "SQLITE_1029",
	} {
		if got := CodeName(code); got != want {
			t.Errorf("CodeName(%d) = %q, want %q", code, got, want)
		}
	}
	if _, ok := LockCode(errors.New("database is locked")); ok {
		t.Error("a lock error is told by its result code, never by its text")
	}
}

// The whole worker against a held lock: each receive attempt fails with SQLITE_BUSY, retried
// while attempts remain, escaping on the last; once the lock is gone the pool drains.
func TestWorkerReportsBusyWhileTheLockIsHeld(t *testing.T) {
	path := newDatabase(t, "WAL")
	ids := seed(t, path, "R1", 1, 5)
	release := holdWriteLock(t, path)
	cfg := testConfig(t, path, map[string]string{
		"QUAERO_WORKERS": "1", "QUAERO_BUSY_TIMEOUT_MS": "0", "QUAERO_RETRY_ATTEMPTS": "2",
		"QUAERO_RETRY_BACKOFF_MS": "5", "QUAERO_POLL_INTERVAL_MS": "10",
	})
	r := startPool(t, cfg)
	waitUntil(t, "two exhausted receives", func() bool {
		n := 0
		for _, e := range only(r.rec.events(t), "operation") {
			if e.str("outcome") == "exhausted" {
				n++
			}
		}
		return n >= 2
	})
	release()
	db := openTestDB(t, path, 10000)
	waitUntil(t, "the drain", drained(t, r, db, len(ids)))
	r.stopAndWait(t)
	events := r.rec.events(t)
	locks := only(events, "lock_error")
	for i, e := range locks[:4] { // two receives, two attempts each
		want := i%2 == 0
		if e.str("operation") != "queue_receive" || e.str("code") != "SQLITE_BUSY" || e["retried"] != want ||
			e.num("attempt") != float64(i%2+1) {
			t.Errorf("lock_error %d: %v; want queue_receive SQLITE_BUSY attempt %d retried %v", i, e, i%2+1, want)
		}
	}
	for _, e := range only(events, "job_finished") {
		if e.str("outcome") != "completed" {
			t.Errorf("job %v: want completed after the lock was released", e)
		}
	}
	if n := len(only(events, "crashed")); n != 0 {
		t.Errorf("%d crashed events: an escaped lock error must not end the worker", n)
	}
}

// Every fix off (rollback journal, busy_timeout 0, one attempt, deferred BEGIN, no stagger):
// three workers on one file really collide, and every collision is reported.
func TestEveryFixOffHitsLockErrors(t *testing.T) {
	path := newDatabase(t, "DELETE")
	seed(t, path, "R1", 2, 30)
	cfg := testConfig(t, path, map[string]string{
		"QUAERO_WORKERS": "3", "QUAERO_POOL_WORKERS": "3", "QUAERO_JOURNAL_MODE": "DELETE",
		"QUAERO_BUSY_TIMEOUT_MS": "0", "QUAERO_RETRY_ATTEMPTS": "1", "QUAERO_DELETE_RETRY_ATTEMPTS": "1",
		"QUAERO_BEGIN_IMMEDIATE": "false", "QUAERO_JOB_TIME_MS": "0..0", "QUAERO_POLL_INTERVAL_MS": "5",
		"QUAERO_DISABLED_FIXES": "wal,busy_timeout,retries,stagger,immediate",
	})
	r := startPool(t, cfg)
	db := openTestDB(t, path, 10000)
	// done when nothing receivable is left and every claim has ended
	waitUntil(t, "every job's end", func() bool {
		events := r.rec.events(t)
		return len(only(events, "claimed")) == len(only(events, "job_finished")) &&
			count(t, db, "select count(*) from goqite where timeout <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now')") == 0
	})
	r.stopAndWait(t)
	events := r.rec.events(t)
	locks := only(events, "lock_error")
	if len(locks) == 0 {
		t.Fatal("no lock errors with every fix off")
	}
	exhausted := 0
	for _, e := range only(events, "operation") {
		if e.str("outcome") == "exhausted" {
			exhausted++
		}
	}
	for _, e := range locks {
		if e["retried"] != false || e.num("attempt") != 1 || int(e.num("result_code"))&0xff != 5 {
			t.Errorf("lock_error %v: want a busy error escaping at attempt 1", e)
		}
	}
	if exhausted != len(locks) {
		t.Errorf("%d exhausted operations for %d escaped lock errors", exhausted, len(locks))
	}
	if n := len(only(events, "crashed")); n != 0 {
		t.Errorf("%d workers crashed", n)
	}
	t.Logf("%d lock errors, %d jobs completed", len(locks), count(t, db, "select count(*) from crawl_jobs where status = 'completed' and parent_id != ''"))
}

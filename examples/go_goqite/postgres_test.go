package main

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"maragu.dev/goqite"
)

// The tests that need a server read its DSN from QUAERO_TEST_PG_DSN and skip without one (or
// when it does not answer). Each test gets a schema of its own, as a plugin run does, reached
// through the DSN's search_path, and drops it afterwards.

//go:embed testdata/schema_postgres.sql
var pgSchema string

const (
	pgSaveParentSQL = "insert into crawl_jobs (id, parent_id, job_type, name, status, total_urls, pending_urls, started_at) " +
		"values ($1, '', 'parent', $2, 'running', $3, $4, now())"
	pgCreateChildSQL = "insert into crawl_jobs (id, parent_id, job_type, name, url, status) " +
		"values ($1, $2, 'crawler_url', $3, $4, 'pending')"
	pgSendSQL = "insert into goqite (queue, body, timeout, priority) " +
		"values ($1, $2, now() + make_interval(secs => $3), $4) returning id"
)

func pythonSource(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile("../../pytest_quaero/core/postgresql/" + path)
	if err != nil {
		t.Skipf("the plugin's source is not beside this module: %v", err)
	}
	return string(data)
}

func pythonString(t *testing.T, source, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?ms)^` + name + ` = (?:"""(.*?)"""|\(((?:\s*"[^"]*"\s*)+)\))`).FindStringSubmatch(source)
	if m == nil {
		t.Fatalf("%s not found in the plugin's source", name)
	}
	if m[1] != "" {
		return m[1]
	}
	var out strings.Builder
	for _, part := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(m[2], -1) {
		out.WriteString(part[1])
	}
	return out.String()
}

func TestPostgresSQLIsThePluginsStore(t *testing.T) {
	plugin := pluginSQL(t)["postgresql"]
	params := strings.NewReplacer("%(status)s", "$1", "%(error)s", "$2", "%(job)s", "$3", "%(done)s", "$4",
		"%(failed)s", "$5", "%(parent)s", "$6")
	if want := params.Replace(plugin["finish"]); pgFinishSQL != want {
		t.Errorf("pgFinishSQL drifted from the plugin's finish statement:\n%s\nwant\n%s", pgFinishSQL, want)
	}
	if want := strings.Replace(plugin["mark_running"], "%s", "$1", 1); pgMarkRunningSQL != want {
		t.Errorf("pgMarkRunningSQL drifted from the plugin's:\n%s\nwant\n%s", pgMarkRunningSQL, want)
	}
	store := pythonSource(t, "store.py")
	queue := pythonSource(t, "queue.py")
	if want := pythonString(t, queue, "SCHEMA") + pythonString(t, store, "SCHEMA"); pgSchema != want {
		t.Errorf("testdata/schema_postgres.sql drifted from queue.py and store.py's SCHEMA")
	}
}

func TestPostgresLockErrorsAreThePluginsSQLSTATEs(t *testing.T) {
	source := pythonSource(t, "errors.py")
	states := regexp.MustCompile(`LOCK_SQLSTATES = frozenset\(\{([^}]*)\}\)`).FindStringSubmatch(source)
	if states == nil {
		t.Fatal("LOCK_SQLSTATES not found in errors.py")
	}
	codes := regexp.MustCompile(`"(\w{5})"`).FindAllStringSubmatch(states[1], -1)
	if len(codes) != len(pgLockNames) {
		t.Errorf("errors.py counts %d lock SQLSTATEs, this worker %d", len(codes), len(pgLockNames))
	}
	for _, c := range codes {
		code := c[1]
		name := regexp.MustCompile(`"` + code + `": "(\w+)"`).FindStringSubmatch(source)
		if name == nil || pgLockNames[code] != name[1] {
			t.Errorf("%s: named %q here, %v in errors.py", code, pgLockNames[code], name)
		}
		err := fmt.Errorf("cannot commit tx: %w", &pgconn.PgError{Code: code, Message: "whatever the text"})
		lock, ok := classifyLock(err)
		if !ok || lock.name != code+" "+name[1] || lock.sqlstate != code || lock.resultCode != 0 {
			t.Errorf("%s: classified %+v, %v; want the plugin's %q", code, lock, ok, code+" "+name[1])
		}
	}
	if _, ok := classifyLock(&pgconn.PgError{Code: "23505"}); ok || !isDatabaseError(&pgconn.PgError{Code: "23505"}) {
		t.Error("23505 unique_violation: want a database error that is not a lock error")
	}
	if _, ok := classifyLock(errors.New("could not serialize access (40001)")); ok {
		t.Error("a lock error told by its text, not its SQLSTATE")
	}
}

// pgServer is the admin handle on QUAERO_TEST_PG_DSN's server, or a skip.
func pgServer(t *testing.T) (*sql.DB, string) {
	t.Helper()
	dsn := os.Getenv("QUAERO_TEST_PG_DSN")
	if dsn == "" {
		t.Skip("QUAERO_TEST_PG_DSN is not set: no PostgreSQL server to test on")
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Skipf("QUAERO_TEST_PG_DSN: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Skipf("no PostgreSQL server reachable at QUAERO_TEST_PG_DSN (%s): %v", redactDSN(dsn), err)
	}
	return db, dsn
}

// newPgRun is what a plugin run leaves: a schema of its own with goqite's table and crawl_jobs,
// and the DSN that lands in it (as the plugin's create_run_schema builds it).
func newPgRun(t *testing.T) (admin *sql.DB, dsn string) {
	t.Helper()
	admin, server := pgServer(t)
	schema := fmt.Sprintf("quaero_gotest_%d", time.Now().UnixNano())
	mustExec(t, admin, "create schema "+schema)
	t.Cleanup(func() { admin.Exec("drop schema if exists " + schema + " cascade") }) //nolint:errcheck
	dsn = withSearchPath(server, schema)
	run, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { run.Close() })
	mustExec(t, run, pgSchema)
	return run, dsn
}

// withSearchPath is the server's DSN landing in schema, a URL or key=value DSN alike.
func withSearchPath(server, schema string) string {
	if u, err := url.Parse(server); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set("options", "-c search_path="+schema)
		u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20") // libpq and pgx read + literally
		return u.String()
	}
	return server + " options='-c search_path=" + schema + "'"
}

func pgConfig(t *testing.T, dsn string, overrides map[string]string) Config {
	t.Helper()
	env := map[string]string{"QUAERO_BACKEND": "postgresql"}
	for k, v := range overrides {
		env[k] = v
	}
	return testConfig(t, dsn, env)
}

func pgWorkerDB(t *testing.T, cfg Config) *sql.DB {
	t.Helper()
	db, err := OpenDB(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// pgSeed writes what seed.py's Producers write on PostgreSQL; it returns the child ids.
func pgSeed(t *testing.T, db *sql.DB, runID string, parents, children int) []string {
	t.Helper()
	var ids []string
	for p := 1; p <= parents; p++ {
		pid := fmt.Sprintf("%s-parent-%d", runID, p)
		mustExec(t, db, pgSaveParentSQL, pid, fmt.Sprintf("Crawl job %d", p), children, children)
		for c := 1; c <= children; c++ {
			cid := fmt.Sprintf("%s-child-%d-%d", runID, p, c)
			u := fmt.Sprintf("http://test-server/parent-%d/page-%d", p, c)
			pgSendChild(t, db, cid, pid, u, encodeJob(cid, pid, u), 0)
			ids = append(ids, cid)
		}
	}
	return ids
}

func pgSendChild(t *testing.T, db *sql.DB, cid, pid, u string, body []byte, delay float64) string {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	if _, err := tx.Exec(pgCreateChildSQL, cid, pid, "page", u); err != nil {
		t.Fatal(err)
	}
	var id string
	if err := tx.QueryRow(pgSendSQL, "quaero_jobs", body, delay, 0).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestPostgresConnectionsRunWithTheConfiguredSettings(t *testing.T) {
	_, dsn := newPgRun(t)
	for _, tc := range []struct {
		busy, sync     string
		lockMS         int
		durableSetting string
	}{{"10000", "NORMAL", 10000, "off"}, {"250", "FULL", 250, "on"}, {"0", "OFF", 0, "off"}} {
		cfg := pgConfig(t, dsn, map[string]string{"QUAERO_BUSY_TIMEOUT_MS": tc.busy, "QUAERO_SYNCHRONOUS": tc.sync})
		got, err := ReadSession(t.Context(), pgWorkerDB(t, cfg))
		if err != nil || got.LockTimeoutMS != tc.lockMS || got.SynchronousCommit != tc.durableSetting ||
			!strings.HasPrefix(got.SearchPath, "quaero_gotest_") || got.Isolation == "" || got.ServerVersion == "" {
			t.Errorf("busy %s, synchronous %s: session %+v, %v", tc.busy, tc.sync, got, err)
		}
	}
}

func TestPostgresHelloSaysPostgreSQL(t *testing.T) {
	_, dsn := newPgRun(t)
	hello, err := sayHello(pgConfig(t, dsn, map[string]string{"QUAERO_BUSY_TIMEOUT_MS": "1234"}))
	if err != nil {
		t.Fatal(err)
	}
	session, ok := hello.Pragmas.(PgSession)
	if hello.Backend != "postgresql" || !ok || session.LockTimeoutMS != 1234 || hello.ServerVersion != session.ServerVersion ||
		hello.SQLiteVersion != "" || hello.TxLock != "" {
		t.Errorf("hello %+v", hello)
	}
	// a bare schema (no tables) is a wrong DSN: refused before hello, as a bare SQLite file is
	_, server := pgServer(t)
	if _, err := sayHello(pgConfig(t, withSearchPath(server, "quaero_gotest_nothing_here"), nil)); err == nil ||
		!strings.Contains(err.Error(), "no goqite and crawl_jobs tables") {
		t.Errorf("hello without the tables: %v", err)
	}
}

func TestPostgresFinishChildMovesTheParentOnce(t *testing.T) {
	run, dsn := newPgRun(t)
	ids := pgSeed(t, run, "R1", 1, 2)
	db := pgWorkerDB(t, pgConfig(t, dsn, nil))
	parent := func() (status string, completed, failed, pending int) {
		row := db.QueryRow("select status, completed_urls, failed_urls, pending_urls from crawl_jobs where id = 'R1-parent-1'")
		if err := row.Scan(&status, &completed, &failed, &pending); err != nil {
			t.Fatal(err)
		}
		return
	}
	if counted, err := FinishChildPG(t.Context(), db, ids[0], "R1-parent-1", false, ""); !counted || err != nil {
		t.Fatalf("first finish: %v, %v", counted, err)
	}
	if counted, err := FinishChildPG(t.Context(), db, ids[0], "R1-parent-1", false, ""); counted || err != nil {
		t.Fatalf("second finish of the same child: %v, %v; want a duplicate", counted, err)
	}
	if s, c, f, p := parent(); s != "running" || c != 1 || f != 0 || p != 1 {
		t.Errorf("parent %s %d/%d/%d, want running 1 completed 0 failed 1 pending", s, c, f, p)
	}
	if counted, err := FinishChildPG(t.Context(), db, ids[1], "R1-parent-1", true, strings.Repeat("é", 600)); !counted || err != nil {
		t.Fatalf("failed child: %v, %v", counted, err)
	}
	if s, c, f, p := parent(); s != "completed" || c != 1 || f != 1 || p != 0 {
		t.Errorf("parent %s %d/%d/%d, want completed 1 completed 1 failed 0 pending", s, c, f, p)
	}
	if n := count(t, db, "select count(*) from crawl_jobs where id = $1 and length(error) = 500", ids[1]); n != 1 {
		t.Error("the stored error is not 500 characters, as store.py keeps")
	}
	if counted, err := FinishChildPG(t.Context(), db, "no-such-child", "R1-parent-1", false, ""); counted || err != nil {
		t.Errorf("unknown child: %v, %v; want not counted", counted, err)
	}
}

// A row another transaction holds past lock_timeout is 55P03, named and retried as the plugin does.
func TestPostgresLockTimeoutIsRetriedAndNamedBySQLSTATE(t *testing.T) {
	run, dsn := newPgRun(t)
	ids := pgSeed(t, run, "R2", 1, 1)
	cfg := pgConfig(t, dsn, map[string]string{"QUAERO_BUSY_TIMEOUT_MS": "50", "QUAERO_RETRY_ATTEMPTS": "2"})
	db := pgWorkerDB(t, cfg)
	holder, err := run.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback() //nolint:errcheck
	if _, err := holder.Exec("select 1 from crawl_jobs where id = $1 for update", ids[0]); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	var delays []time.Duration
	r := &Retrier{Events: NewEvents(rec, nil), Worker: 4, Sleep: func(_ context.Context, d time.Duration) bool {
		delays = append(delays, d)
		return true
	}}
	err = r.Do(t.Context(), "save_job", cfg.Retry, func(ctx context.Context) error { return MarkRunningPG(ctx, db, ids[0]) })
	if state, ok := PgLockState(err); !ok || state != "55P03" {
		t.Fatalf("mark running on a held row: %v, want 55P03", err)
	}
	locks, ops := only(rec.events(t), "lock_error"), only(rec.events(t), "operation")
	if len(locks) != 2 || len(delays) != 1 || len(ops) != 1 || ops[0].str("outcome") != "exhausted" {
		t.Fatalf("lock errors %v, delays %v, operations %v", locks, delays, ops)
	}
	for i, e := range locks {
		if e.str("code") != "55P03 lock_not_available" || e.str("sqlstate") != "55P03" || e["result_code"] != nil ||
			e.num("attempt") != float64(i+1) || e["retried"] != (i == 0) || e.worker() != 4 {
			t.Errorf("lock_error %v", e)
		}
	}
	if err := holder.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := MarkRunningPG(t.Context(), db, ids[0]); err != nil {
		t.Errorf("mark running once the row is free: %v", err)
	}
}

// The claim passes over a message another claim holds (FOR UPDATE SKIP LOCKED); goqite's own
// receive, given the same, waits for the holder and then fails with 40001 (goqite PR #72).
func TestPostgresClaimSkipsAHeldMessageWhereGoqitesOwnFails(t *testing.T) {
	run, dsn := newPgRun(t)
	older := pgSendChild(t, run, "c1", "p", "u1", encodeJob("c1", "p", "u1"), 0)
	time.Sleep(2 * time.Millisecond) // created is the order: the older one is claimed first
	newer := pgSendChild(t, run, "c2", "p", "u2", encodeJob("c2", "p", "u2"), 0)
	holder, err := run.BeginTx(t.Context(), &sql.TxOptions{Isolation: sql.LevelSerializable})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback() //nolint:errcheck
	// what a claim in progress does to the row it claims
	if _, err := holder.Exec("update goqite set received = received + 1 where id = $1", older); err != nil {
		t.Fatal(err)
	}
	// a claim that waited would fail after lock_timeout (55P03), not hang the test
	cfg := pgConfig(t, dsn, map[string]string{"QUAERO_BUSY_TIMEOUT_MS": "30000", "QUAERO_RETRY_ATTEMPTS": "1"})
	m, delivery, err := ReceivePG(t.Context(), pgWorkerDB(t, cfg), cfg)
	if err != nil || m == nil || string(m.ID) != newer || delivery != 1 {
		t.Fatalf("claim beside a held message: %v, %d, %v; want %s at delivery 1", m, delivery, err, newer)
	}

	cfg.ShippedReceive = true
	db := pgWorkerDB(t, cfg)
	rec := &recorder{}
	events := NewEvents(rec, nil)
	w := &worker{pool: &Pool{Config: cfg, Events: events}, index: 1, db: db,
		retrier: &Retrier{Events: events, Worker: 1},
		queue:   goqite.New(goqite.NewOpts{DB: db, Name: cfg.Queue, MaxReceive: cfg.MaxReceive, Timeout: cfg.VisibilityTimeout, SQLFlavor: goqite.SQLFlavorPostgreSQL})}
	done := make(chan error, 1)
	go func() {
		_, _, err := w.receive(context.Background())
		done <- err
	}()
	waitUntil(t, "goqite's receive to wait for the held row", func() bool {
		return count(t, run, "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query like '%update goqite%'") == 1
	})
	if err := holder.Commit(); err != nil {
		t.Fatal(err)
	}
	err = <-done
	if state, ok := PgLockState(err); !ok || state != "40001" {
		t.Fatalf("goqite's receive after the holder committed: %v, want 40001", err)
	}
	locks := only(rec.events(t), "lock_error")
	if len(locks) != 1 || locks[0].str("code") != "40001 serialization_failure" || locks[0]["retried"] != false ||
		locks[0].str("operation") != "queue_receive" {
		t.Errorf("lock errors %v", locks)
	}
}

// The in-process pool on PostgreSQL: every job completed once, the parents' counters right,
// and with the SKIP LOCKED claim no lock error at all.
func TestPostgresPoolDrainsTheQueue(t *testing.T) {
	run, dsn := newPgRun(t)
	ids := pgSeed(t, run, "R3", 3, 10)
	cfg := pgConfig(t, dsn, map[string]string{"QUAERO_WORKERS": "3", "QUAERO_POOL_WORKERS": "3"})
	r := startPool(t, cfg)
	waitUntil(t, "the queue to drain", func() bool {
		return count(t, run, "select count(*) from goqite") == 0
	})
	if crashed := r.stopAndWait(t); crashed != 0 {
		t.Fatalf("%d workers crashed: %v", crashed, only(r.rec.events(t), "crashed"))
	}
	events := r.rec.events(t)
	seen := map[string]int{}
	for _, e := range only(events, "job_finished") {
		if e.str("outcome") != "completed" {
			t.Errorf("job_finished %v", e)
		}
		seen[e.str("job_id")]++
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("job %s finished %d times", id, seen[id])
		}
	}
	if locks := only(events, "lock_error"); len(locks) != 0 {
		t.Errorf("lock errors with the SKIP LOCKED claim: %v", locks)
	}
	if n := count(t, run, "select count(*) from crawl_jobs where job_type = 'parent' and status = 'completed' "+
		"and completed_urls = 10 and pending_urls = 0"); n != 3 {
		t.Errorf("%d of 3 parents completed with 10 children counted", n)
	}
	if n := len(only(events, "worker_stopped")); n != 3 {
		t.Errorf("%d worker_stopped events, want 3", n)
	}
}

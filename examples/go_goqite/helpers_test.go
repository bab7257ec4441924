package main

import (
	"bytes"
	"context"
	"database/sql"
	_ "embed"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

//go:embed testdata/schema.sql
var pluginSchema string

// openTestDB opens path with a busy timeout, for the tests' own setup and checks.
func openTestDB(t *testing.T, path string, busyMS int) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", fmt.Sprintf("file:%s?_pragma=busy_timeout(%d)&_txlock=immediate", path, busyMS))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// newDatabase is what the plugin's prepare_database leaves: the journal mode, then its schema.
func newDatabase(t *testing.T, journal string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "quaero.db")
	db := openTestDB(t, path, 10000)
	mustExec(t, db, "pragma journal_mode = "+journal)
	mustExec(t, db, pluginSchema)
	return path
}

func mustExec(t *testing.T, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// The plugin's producer SQL: store.py save_parent and create_child, queue.py send.
const (
	saveParentSQL = "insert into crawl_jobs (id, parent_id, job_type, name, status, total_urls, pending_urls, started_at) " +
		"values (?, '', 'parent', ?, 'running', ?, ?, " + now + ")"
	createChildSQL = "insert into crawl_jobs (id, parent_id, job_type, name, url, status) " +
		"values (?, ?, 'crawler_url', ?, ?, 'pending')"
	pluginSendSQL = "insert into goqite (queue, body, timeout, priority) " +
		"values (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), ?) returning id"
)

// encodeJob is jobs.py encode_job: compact JSON, keys in the same order.
func encodeJob(jobID, parentID, url string) []byte {
	b, _ := json.Marshal(body{ID: jobID, Type: "crawler_url", ParentID: parentID, URL: url,
		CreatedAt: unixSeconds(time.Now())})
	return b
}

// seed writes what seed.py's Producers write: per parent a running parent row expecting
// `children` children, then each child row with its message in one transaction.
func seed(t *testing.T, path, runID string, parents, children int) []string {
	t.Helper()
	db := openTestDB(t, path, 10000)
	var ids []string
	for p := 1; p <= parents; p++ {
		pid := fmt.Sprintf("%s-parent-%d", runID, p)
		mustExec(t, db, saveParentSQL, pid, fmt.Sprintf("Crawl job %d", p), children, children)
		for c := 1; c <= children; c++ {
			cid := fmt.Sprintf("%s-child-%d-%d", runID, p, c)
			url := fmt.Sprintf("http://test-server/parent-%d/page-%d", p, c)
			sendChild(t, db, cid, pid, url, fmt.Sprintf("page-%d", c), encodeJob(cid, pid, url), "+0.000 seconds")
			ids = append(ids, cid)
		}
	}
	return ids
}

func sendChild(t *testing.T, db *sql.DB, cid, pid, url, name string, body []byte, delay string) string {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	if _, err := tx.Exec(createChildSQL, cid, pid, name, url); err != nil {
		t.Fatal(err)
	}
	var id string
	if err := tx.QueryRow(pluginSendSQL, "quaero_jobs", body, delay, 0).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return id
}

// testEnv is the environment a plugin run passes, made fast for tests; overrides win.
func testEnv(path string, overrides map[string]string) func(string) string {
	env := map[string]string{
		"QUAERO_PROTOCOL": "1", "QUAERO_EVENTS_FD": "3", "QUAERO_DB_PATH": path,
		"QUAERO_QUEUE_NAME": "quaero_jobs", "QUAERO_WORKERS": "2", "QUAERO_WORKER_INDEX_BASE": "0",
		"QUAERO_POOL_WORKERS": "2", "QUAERO_STAGGER_MS": "0", "QUAERO_POLL_INTERVAL_MS": "10",
		"QUAERO_BUSY_TIMEOUT_MS": "10000", "QUAERO_JOURNAL_MODE": "WAL", "QUAERO_SYNCHRONOUS": "NORMAL",
		"QUAERO_CACHE_SIZE_MB": "2", "QUAERO_BEGIN_IMMEDIATE": "true", "QUAERO_RETRY_ATTEMPTS": "5",
		"QUAERO_RETRY_BACKOFF_MS": "100", "QUAERO_DELETE_RETRY_ATTEMPTS": "3",
		"QUAERO_DELETE_RETRY_BACKOFF_MS": "200", "QUAERO_VISIBILITY_TIMEOUT_MS": "300000",
		"QUAERO_MAX_RECEIVE": "3", "QUAERO_JOB_TIME_MS": "0..1", "QUAERO_SEED": "7", "QUAERO_DISABLED_FIXES": "",
	}
	for k, v := range overrides {
		env[k] = v
	}
	return func(name string) string { return env[name] }
}

func testConfig(t *testing.T, path string, overrides map[string]string) Config {
	t.Helper()
	cfg, err := LoadConfig(testEnv(path, overrides))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// recorder is an events sink that tests can read while workers write.
type recorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

type event map[string]any

func (e event) str(key string) string { s, _ := e[key].(string); return s }
func (e event) num(key string) float64 {
	f, _ := e[key].(float64)
	return f
}
func (e event) worker() int { return int(e.num("worker")) }

// parseEvents reads JSON lines; every line must be whole and valid.
func parseEvents(t *testing.T, data []byte) []event {
	t.Helper()
	var out []event
	for i, line := range bytes.Split(data, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("event line %d is not JSON: %q", i+1, line)
		}
		out = append(out, e)
	}
	return out
}

func (r *recorder) events(t *testing.T) []event {
	r.mu.Lock()
	data := append([]byte(nil), r.buf.Bytes()...)
	r.mu.Unlock()
	return parseEvents(t, data)
}

func only(events []event, name string) []event {
	var out []event
	for _, e := range events {
		if e.str("event") == name {
			out = append(out, e)
		}
	}
	return out
}

// waitUntil polls cond; the deadline only stops a broken test from hanging.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// running is a pool started in-process, as main does after the start line.
type running struct {
	rec     *recorder
	stop    chan struct{}
	abandon context.CancelFunc
	done    chan int
}

func startPool(t *testing.T, cfg Config) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{rec: &recorder{}, stop: make(chan struct{}), abandon: cancel, done: make(chan int, 1)}
	pool := &Pool{Config: cfg, Events: NewEvents(r.rec, nil), Start: time.Now(), Stop: r.stop, Abandon: ctx}
	go func() { r.done <- pool.Run() }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.stopAndWait(t)
		}
		cancel()
	})
	return r
}

func (r *running) stopAndWait(t *testing.T) int {
	t.Helper()
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	select {
	case crashed := <-r.done:
		r.done <- crashed // keep it for a second look (Cleanup)
		return crashed
	case <-time.After(45 * time.Second):
		t.Fatal("the pool did not stop")
		return -1
	}
}

func count(t *testing.T, db *sql.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func itoa(n int) string { return strconv.Itoa(n) }
